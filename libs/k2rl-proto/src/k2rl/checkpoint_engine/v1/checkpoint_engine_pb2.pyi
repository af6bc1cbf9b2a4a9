import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from k2rl.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkerKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKER_KIND_UNSPECIFIED: _ClassVar[WorkerKind]
    WORKER_KIND_TRAINER_RANK: _ClassVar[WorkerKind]
    WORKER_KIND_ENGINE_WORKER: _ClassVar[WorkerKind]
    WORKER_KIND_INFERENCE_REPLICA: _ClassVar[WorkerKind]

class VersionPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERSION_PHASE_UNSPECIFIED: _ClassVar[VersionPhase]
    VERSION_PHASE_GATHERING: _ClassVar[VersionPhase]
    VERSION_PHASE_DISTRIBUTING: _ClassVar[VersionPhase]
    VERSION_PHASE_COMPLETE: _ClassVar[VersionPhase]
    VERSION_PHASE_FAILED: _ClassVar[VersionPhase]
WORKER_KIND_UNSPECIFIED: WorkerKind
WORKER_KIND_TRAINER_RANK: WorkerKind
WORKER_KIND_ENGINE_WORKER: WorkerKind
WORKER_KIND_INFERENCE_REPLICA: WorkerKind
VERSION_PHASE_UNSPECIFIED: VersionPhase
VERSION_PHASE_GATHERING: VersionPhase
VERSION_PHASE_DISTRIBUTING: VersionPhase
VERSION_PHASE_COMPLETE: VersionPhase
VERSION_PHASE_FAILED: VersionPhase

class Device(_message.Message):
    __slots__ = ("node", "name", "uuid")
    NODE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    node: str
    name: str
    uuid: str
    def __init__(self, node: _Optional[str] = ..., name: _Optional[str] = ..., uuid: _Optional[str] = ...) -> None: ...

class Lease(_message.Message):
    __slots__ = ("ttl_ms", "expire_time")
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    ttl_ms: int
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, ttl_ms: _Optional[int] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RegisterWorkerRequest(_message.Message):
    __slots__ = ("kind", "instance_name", "devices", "rank", "world_size", "address", "weight_version", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    KIND_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    kind: WorkerKind
    instance_name: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    rank: int
    world_size: int
    address: str
    weight_version: int
    labels: _containers.ScalarMap[str, str]
    def __init__(self, kind: _Optional[_Union[WorkerKind, str]] = ..., instance_name: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., address: _Optional[str] = ..., weight_version: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class RegisterWorkerResponse(_message.Message):
    __slots__ = ("worker_id", "lease", "latest_version")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LEASE_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    lease: Lease
    latest_version: _common_pb2.WeightVersion
    def __init__(self, worker_id: _Optional[str] = ..., lease: _Optional[_Union[Lease, _Mapping]] = ..., latest_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ...) -> None: ...

class HeartbeatRequest(_message.Message):
    __slots__ = ("worker_id", "weight_version")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    weight_version: int
    def __init__(self, worker_id: _Optional[str] = ..., weight_version: _Optional[int] = ...) -> None: ...

class HeartbeatResponse(_message.Message):
    __slots__ = ("lease", "latest_version")
    LEASE_FIELD_NUMBER: _ClassVar[int]
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    lease: Lease
    latest_version: _common_pb2.WeightVersion
    def __init__(self, lease: _Optional[_Union[Lease, _Mapping]] = ..., latest_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ...) -> None: ...

class DeregisterWorkerRequest(_message.Message):
    __slots__ = ("worker_id", "reason")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    reason: str
    def __init__(self, worker_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class DeregisterWorkerResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublishVersionRequest(_message.Message):
    __slots__ = ("version", "trainer", "checkpoint", "buckets")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.WeightVersion
    trainer: TrainerWeightSource
    checkpoint: CheckpointWeightSource
    buckets: _containers.RepeatedCompositeFieldContainer[PlannedBucket]
    def __init__(self, version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., trainer: _Optional[_Union[TrainerWeightSource, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointWeightSource, _Mapping]] = ..., buckets: _Optional[_Iterable[_Union[PlannedBucket, _Mapping]]] = ...) -> None: ...

class TrainerWeightSource(_message.Message):
    __slots__ = ("world_size",)
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    world_size: int
    def __init__(self, world_size: _Optional[int] = ...) -> None: ...

class CheckpointWeightSource(_message.Message):
    __slots__ = ("path", "format")
    PATH_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    path: str
    format: _common_pb2.CheckpointFormat
    def __init__(self, path: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.CheckpointFormat, str]] = ...) -> None: ...

class PlannedBucket(_message.Message):
    __slots__ = ("bucket", "source_worker_id", "source_buffer", "source_byte_offset")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BUFFER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BYTE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    bucket: _common_pb2.WeightBucket
    source_worker_id: str
    source_buffer: _common_pb2.IpcHandle
    source_byte_offset: int
    def __init__(self, bucket: _Optional[_Union[_common_pb2.WeightBucket, _Mapping]] = ..., source_worker_id: _Optional[str] = ..., source_buffer: _Optional[_Union[_common_pb2.IpcHandle, _Mapping]] = ..., source_byte_offset: _Optional[int] = ...) -> None: ...

class PublishVersionResponse(_message.Message):
    __slots__ = ("version", "bucket_count", "target_replicas")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    TARGET_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.WeightVersion
    bucket_count: int
    target_replicas: int
    def __init__(self, version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., bucket_count: _Optional[int] = ..., target_replicas: _Optional[int] = ...) -> None: ...

class GetVersionRequest(_message.Message):
    __slots__ = ("changed_since", "wait_ms")
    CHANGED_SINCE_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    changed_since: int
    wait_ms: int
    def __init__(self, changed_since: _Optional[int] = ..., wait_ms: _Optional[int] = ...) -> None: ...

class GetVersionResponse(_message.Message):
    __slots__ = ("latest_version", "latest_phase", "fleet_version", "replicas", "generation")
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATEST_PHASE_FIELD_NUMBER: _ClassVar[int]
    FLEET_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    latest_version: _common_pb2.WeightVersion
    latest_phase: VersionPhase
    fleet_version: int
    replicas: _containers.RepeatedCompositeFieldContainer[ReplicaVersion]
    generation: int
    def __init__(self, latest_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., latest_phase: _Optional[_Union[VersionPhase, str]] = ..., fleet_version: _Optional[int] = ..., replicas: _Optional[_Iterable[_Union[ReplicaVersion, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class ReplicaVersion(_message.Message):
    __slots__ = ("worker_id", "instance_name", "address", "weight_version", "last_outcome", "last_error", "last_update_time", "live")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    LAST_OUTCOME_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    LIVE_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    instance_name: str
    address: str
    weight_version: int
    last_outcome: _common_pb2.WeightUpdateOutcome
    last_error: _common_pb2.ErrorDetail
    last_update_time: _timestamp_pb2.Timestamp
    live: bool
    def __init__(self, worker_id: _Optional[str] = ..., instance_name: _Optional[str] = ..., address: _Optional[str] = ..., weight_version: _Optional[int] = ..., last_outcome: _Optional[_Union[_common_pb2.WeightUpdateOutcome, str]] = ..., last_error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., last_update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., live: _Optional[bool] = ...) -> None: ...

class GetShardPlanRequest(_message.Message):
    __slots__ = ("version", "selectors")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SELECTORS_FIELD_NUMBER: _ClassVar[int]
    version: int
    selectors: _containers.RepeatedCompositeFieldContainer[TensorSelector]
    def __init__(self, version: _Optional[int] = ..., selectors: _Optional[_Iterable[_Union[TensorSelector, _Mapping]]] = ...) -> None: ...

class TensorSelector(_message.Message):
    __slots__ = ("name", "dim", "start", "length")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    LENGTH_FIELD_NUMBER: _ClassVar[int]
    name: str
    dim: int
    start: int
    length: int
    def __init__(self, name: _Optional[str] = ..., dim: _Optional[int] = ..., start: _Optional[int] = ..., length: _Optional[int] = ...) -> None: ...

class GetShardPlanResponse(_message.Message):
    __slots__ = ("version", "entries", "bucket_indices", "needed_bytes")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BUCKET_INDICES_FIELD_NUMBER: _ClassVar[int]
    NEEDED_BYTES_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.WeightVersion
    entries: _containers.RepeatedCompositeFieldContainer[ShardPlanEntry]
    bucket_indices: _containers.RepeatedScalarFieldContainer[int]
    needed_bytes: int
    def __init__(self, version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., entries: _Optional[_Iterable[_Union[ShardPlanEntry, _Mapping]]] = ..., bucket_indices: _Optional[_Iterable[int]] = ..., needed_bytes: _Optional[int] = ...) -> None: ...

class ShardPlanEntry(_message.Message):
    __slots__ = ("selector", "bucket_index", "tensor")
    SELECTOR_FIELD_NUMBER: _ClassVar[int]
    BUCKET_INDEX_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    selector: TensorSelector
    bucket_index: int
    tensor: _common_pb2.TensorMeta
    def __init__(self, selector: _Optional[_Union[TensorSelector, _Mapping]] = ..., bucket_index: _Optional[int] = ..., tensor: _Optional[_Union[_common_pb2.TensorMeta, _Mapping]] = ...) -> None: ...

class WaitForVersionRequest(_message.Message):
    __slots__ = ("min_version", "replica_worker_ids")
    MIN_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLICA_WORKER_IDS_FIELD_NUMBER: _ClassVar[int]
    min_version: int
    replica_worker_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, min_version: _Optional[int] = ..., replica_worker_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class WaitForVersionResponse(_message.Message):
    __slots__ = ("version", "phase", "replicas_ready", "replicas_total", "bytes_distributed", "changed_replicas", "error")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_READY_FIELD_NUMBER: _ClassVar[int]
    REPLICAS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    BYTES_DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    CHANGED_REPLICAS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    version: int
    phase: VersionPhase
    replicas_ready: int
    replicas_total: int
    bytes_distributed: int
    changed_replicas: _containers.RepeatedCompositeFieldContainer[ReplicaVersion]
    error: _common_pb2.ErrorDetail
    def __init__(self, version: _Optional[int] = ..., phase: _Optional[_Union[VersionPhase, str]] = ..., replicas_ready: _Optional[int] = ..., replicas_total: _Optional[int] = ..., bytes_distributed: _Optional[int] = ..., changed_replicas: _Optional[_Iterable[_Union[ReplicaVersion, _Mapping]]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class ReportUpdateRequest(_message.Message):
    __slots__ = ("reporter_worker_id", "replica_worker_id", "version", "outcome", "error", "bytes_loaded", "duration_ms")
    REPORTER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    REPLICA_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BYTES_LOADED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    reporter_worker_id: str
    replica_worker_id: str
    version: int
    outcome: _common_pb2.WeightUpdateOutcome
    error: _common_pb2.ErrorDetail
    bytes_loaded: int
    duration_ms: float
    def __init__(self, reporter_worker_id: _Optional[str] = ..., replica_worker_id: _Optional[str] = ..., version: _Optional[int] = ..., outcome: _Optional[_Union[_common_pb2.WeightUpdateOutcome, str]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., bytes_loaded: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class ReportUpdateResponse(_message.Message):
    __slots__ = ("latest_version", "will_retry")
    LATEST_VERSION_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    latest_version: _common_pb2.WeightVersion
    will_retry: bool
    def __init__(self, latest_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., will_retry: _Optional[bool] = ...) -> None: ...

class GetVersionPlanRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class GetVersionPlanResponse(_message.Message):
    __slots__ = ("version", "phase", "trainer", "checkpoint", "buckets", "trace_parent")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    TRAINER_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.WeightVersion
    phase: VersionPhase
    trainer: TrainerWeightSource
    checkpoint: CheckpointWeightSource
    buckets: _containers.RepeatedCompositeFieldContainer[PlannedBucket]
    trace_parent: str
    def __init__(self, version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., phase: _Optional[_Union[VersionPhase, str]] = ..., trainer: _Optional[_Union[TrainerWeightSource, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointWeightSource, _Mapping]] = ..., buckets: _Optional[_Iterable[_Union[PlannedBucket, _Mapping]]] = ..., trace_parent: _Optional[str] = ...) -> None: ...

class ReportVersionProgressRequest(_message.Message):
    __slots__ = ("reporter_worker_id", "version", "phase", "bytes_distributed", "error", "phase_seconds", "bytes_gathered")
    class PhaseSecondsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    REPORTER_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    BYTES_DISTRIBUTED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PHASE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_GATHERED_FIELD_NUMBER: _ClassVar[int]
    reporter_worker_id: str
    version: int
    phase: VersionPhase
    bytes_distributed: int
    error: _common_pb2.ErrorDetail
    phase_seconds: _containers.ScalarMap[str, float]
    bytes_gathered: int
    def __init__(self, reporter_worker_id: _Optional[str] = ..., version: _Optional[int] = ..., phase: _Optional[_Union[VersionPhase, str]] = ..., bytes_distributed: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., phase_seconds: _Optional[_Mapping[str, float]] = ..., bytes_gathered: _Optional[int] = ...) -> None: ...

class ReportVersionProgressResponse(_message.Message):
    __slots__ = ("phase",)
    PHASE_FIELD_NUMBER: _ClassVar[int]
    phase: VersionPhase
    def __init__(self, phase: _Optional[_Union[VersionPhase, str]] = ...) -> None: ...
