from k2rl.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LossKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_KIND_UNSPECIFIED: _ClassVar[LossKind]
    LOSS_KIND_PRETRAIN: _ClassVar[LossKind]
    LOSS_KIND_SFT: _ClassVar[LossKind]
    LOSS_KIND_RL_K15: _ClassVar[LossKind]

class OldLogprobSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OLD_LOGPROB_SOURCE_UNSPECIFIED: _ClassVar[OldLogprobSource]
    OLD_LOGPROB_SOURCE_ROLLOUT: _ClassVar[OldLogprobSource]
    OLD_LOGPROB_SOURCE_RECOMPUTE: _ClassVar[OldLogprobSource]

class TrainerStateComponent(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINER_STATE_COMPONENT_UNSPECIFIED: _ClassVar[TrainerStateComponent]
    TRAINER_STATE_COMPONENT_PARAMETERS: _ClassVar[TrainerStateComponent]
    TRAINER_STATE_COMPONENT_OPTIMIZER_STATE: _ClassVar[TrainerStateComponent]
    TRAINER_STATE_COMPONENT_GRADIENTS: _ClassVar[TrainerStateComponent]

class MemoryPlacement(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_PLACEMENT_UNSPECIFIED: _ClassVar[MemoryPlacement]
    MEMORY_PLACEMENT_DEVICE: _ClassVar[MemoryPlacement]
    MEMORY_PLACEMENT_HOST: _ClassVar[MemoryPlacement]
    MEMORY_PLACEMENT_NOT_ALLOCATED: _ClassVar[MemoryPlacement]

class TrainerActivity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRAINER_ACTIVITY_UNSPECIFIED: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_IDLE: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_TRAINING: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_OFFLOADING: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_ONLOADING: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_PUBLISHING: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_SAVING: _ClassVar[TrainerActivity]
    TRAINER_ACTIVITY_LOADING: _ClassVar[TrainerActivity]
LOSS_KIND_UNSPECIFIED: LossKind
LOSS_KIND_PRETRAIN: LossKind
LOSS_KIND_SFT: LossKind
LOSS_KIND_RL_K15: LossKind
OLD_LOGPROB_SOURCE_UNSPECIFIED: OldLogprobSource
OLD_LOGPROB_SOURCE_ROLLOUT: OldLogprobSource
OLD_LOGPROB_SOURCE_RECOMPUTE: OldLogprobSource
TRAINER_STATE_COMPONENT_UNSPECIFIED: TrainerStateComponent
TRAINER_STATE_COMPONENT_PARAMETERS: TrainerStateComponent
TRAINER_STATE_COMPONENT_OPTIMIZER_STATE: TrainerStateComponent
TRAINER_STATE_COMPONENT_GRADIENTS: TrainerStateComponent
MEMORY_PLACEMENT_UNSPECIFIED: MemoryPlacement
MEMORY_PLACEMENT_DEVICE: MemoryPlacement
MEMORY_PLACEMENT_HOST: MemoryPlacement
MEMORY_PLACEMENT_NOT_ALLOCATED: MemoryPlacement
TRAINER_ACTIVITY_UNSPECIFIED: TrainerActivity
TRAINER_ACTIVITY_IDLE: TrainerActivity
TRAINER_ACTIVITY_TRAINING: TrainerActivity
TRAINER_ACTIVITY_OFFLOADING: TrainerActivity
TRAINER_ACTIVITY_ONLOADING: TrainerActivity
TRAINER_ACTIVITY_PUBLISHING: TrainerActivity
TRAINER_ACTIVITY_SAVING: TrainerActivity
TRAINER_ACTIVITY_LOADING: TrainerActivity

class TrainStepRequest(_message.Message):
    __slots__ = ("config", "trajectories", "sequences", "ptx_sequences")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    PTX_SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    config: TrainStepConfig
    trajectories: _containers.RepeatedCompositeFieldContainer[_common_pb2.Trajectory]
    sequences: _containers.RepeatedCompositeFieldContainer[TokenSequence]
    ptx_sequences: _containers.RepeatedCompositeFieldContainer[TokenSequence]
    def __init__(self, config: _Optional[_Union[TrainStepConfig, _Mapping]] = ..., trajectories: _Optional[_Iterable[_Union[_common_pb2.Trajectory, _Mapping]]] = ..., sequences: _Optional[_Iterable[_Union[TokenSequence, _Mapping]]] = ..., ptx_sequences: _Optional[_Iterable[_Union[TokenSequence, _Mapping]]] = ...) -> None: ...

class TrainStepConfig(_message.Message):
    __slots__ = ("loss_kind", "expected_step", "iteration", "rl")
    LOSS_KIND_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_STEP_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    RL_FIELD_NUMBER: _ClassVar[int]
    loss_kind: LossKind
    expected_step: int
    iteration: int
    rl: RlLossParams
    def __init__(self, loss_kind: _Optional[_Union[LossKind, str]] = ..., expected_step: _Optional[int] = ..., iteration: _Optional[int] = ..., rl: _Optional[_Union[RlLossParams, _Mapping]] = ...) -> None: ...

class RlLossParams(_message.Message):
    __slots__ = ("tau", "ptx_weight", "budget_penalty", "old_logprob_source")
    TAU_FIELD_NUMBER: _ClassVar[int]
    PTX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PENALTY_FIELD_NUMBER: _ClassVar[int]
    OLD_LOGPROB_SOURCE_FIELD_NUMBER: _ClassVar[int]
    tau: float
    ptx_weight: float
    budget_penalty: BudgetPenalty
    old_logprob_source: OldLogprobSource
    def __init__(self, tau: _Optional[float] = ..., ptx_weight: _Optional[float] = ..., budget_penalty: _Optional[_Union[BudgetPenalty, _Mapping]] = ..., old_logprob_source: _Optional[_Union[OldLogprobSource, str]] = ...) -> None: ...

class BudgetPenalty(_message.Message):
    __slots__ = ("truncation_penalty", "soft_window_tokens")
    TRUNCATION_PENALTY_FIELD_NUMBER: _ClassVar[int]
    SOFT_WINDOW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    truncation_penalty: float
    soft_window_tokens: int
    def __init__(self, truncation_penalty: _Optional[float] = ..., soft_window_tokens: _Optional[int] = ...) -> None: ...

class TokenSequence(_message.Message):
    __slots__ = ("token_ids", "loss_mask", "sequence_id")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_MASK_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    loss_mask: _containers.RepeatedScalarFieldContainer[bool]
    sequence_id: str
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., loss_mask: _Optional[_Iterable[bool]] = ..., sequence_id: _Optional[str] = ...) -> None: ...

class TrainStepResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: TrainStepMetrics
    def __init__(self, metrics: _Optional[_Union[TrainStepMetrics, _Mapping]] = ...) -> None: ...

class TrainStepMetrics(_message.Message):
    __slots__ = ("step", "loss_kind", "total_loss", "policy_loss", "ptx_loss", "lm_loss", "grad_norm", "learning_rate", "qk_clip", "trained_tokens", "processed_tokens", "tokens_per_second", "mfu", "step_time_ms", "rl", "peak_device_memory_bytes", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STEP_FIELD_NUMBER: _ClassVar[int]
    LOSS_KIND_FIELD_NUMBER: _ClassVar[int]
    TOTAL_LOSS_FIELD_NUMBER: _ClassVar[int]
    POLICY_LOSS_FIELD_NUMBER: _ClassVar[int]
    PTX_LOSS_FIELD_NUMBER: _ClassVar[int]
    LM_LOSS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    QK_CLIP_FIELD_NUMBER: _ClassVar[int]
    TRAINED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROCESSED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    MFU_FIELD_NUMBER: _ClassVar[int]
    STEP_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    RL_FIELD_NUMBER: _ClassVar[int]
    PEAK_DEVICE_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    step: int
    loss_kind: LossKind
    total_loss: float
    policy_loss: float
    ptx_loss: float
    lm_loss: float
    grad_norm: float
    learning_rate: float
    qk_clip: QkClipStats
    trained_tokens: int
    processed_tokens: int
    tokens_per_second: float
    mfu: float
    step_time_ms: float
    rl: RlStepStats
    peak_device_memory_bytes: int
    extra: _containers.ScalarMap[str, float]
    def __init__(self, step: _Optional[int] = ..., loss_kind: _Optional[_Union[LossKind, str]] = ..., total_loss: _Optional[float] = ..., policy_loss: _Optional[float] = ..., ptx_loss: _Optional[float] = ..., lm_loss: _Optional[float] = ..., grad_norm: _Optional[float] = ..., learning_rate: _Optional[float] = ..., qk_clip: _Optional[_Union[QkClipStats, _Mapping]] = ..., trained_tokens: _Optional[int] = ..., processed_tokens: _Optional[int] = ..., tokens_per_second: _Optional[float] = ..., mfu: _Optional[float] = ..., step_time_ms: _Optional[float] = ..., rl: _Optional[_Union[RlStepStats, _Mapping]] = ..., peak_device_memory_bytes: _Optional[int] = ..., extra: _Optional[_Mapping[str, float]] = ...) -> None: ...

class QkClipStats(_message.Message):
    __slots__ = ("tau", "clipped_heads", "total_heads", "max_logit", "max_logit_per_layer")
    TAU_FIELD_NUMBER: _ClassVar[int]
    CLIPPED_HEADS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_HEADS_FIELD_NUMBER: _ClassVar[int]
    MAX_LOGIT_FIELD_NUMBER: _ClassVar[int]
    MAX_LOGIT_PER_LAYER_FIELD_NUMBER: _ClassVar[int]
    tau: float
    clipped_heads: int
    total_heads: int
    max_logit: float
    max_logit_per_layer: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, tau: _Optional[float] = ..., clipped_heads: _Optional[int] = ..., total_heads: _Optional[int] = ..., max_logit: _Optional[float] = ..., max_logit_per_layer: _Optional[_Iterable[float]] = ...) -> None: ...

class RlStepStats(_message.Message):
    __slots__ = ("trajectories", "groups", "reward_mean", "reward_std", "budget_penalty_mean", "truncated_fraction", "mean_response_tokens", "log_ratio_mean", "stale_token_fraction")
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    REWARD_MEAN_FIELD_NUMBER: _ClassVar[int]
    REWARD_STD_FIELD_NUMBER: _ClassVar[int]
    BUDGET_PENALTY_MEAN_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MEAN_RESPONSE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    LOG_RATIO_MEAN_FIELD_NUMBER: _ClassVar[int]
    STALE_TOKEN_FRACTION_FIELD_NUMBER: _ClassVar[int]
    trajectories: int
    groups: int
    reward_mean: float
    reward_std: float
    budget_penalty_mean: float
    truncated_fraction: float
    mean_response_tokens: float
    log_ratio_mean: float
    stale_token_fraction: float
    def __init__(self, trajectories: _Optional[int] = ..., groups: _Optional[int] = ..., reward_mean: _Optional[float] = ..., reward_std: _Optional[float] = ..., budget_penalty_mean: _Optional[float] = ..., truncated_fraction: _Optional[float] = ..., mean_response_tokens: _Optional[float] = ..., log_ratio_mean: _Optional[float] = ..., stale_token_fraction: _Optional[float] = ...) -> None: ...

class OffloadRequest(_message.Message):
    __slots__ = ("components",)
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedScalarFieldContainer[TrainerStateComponent]
    def __init__(self, components: _Optional[_Iterable[_Union[TrainerStateComponent, str]]] = ...) -> None: ...

class OffloadResponse(_message.Message):
    __slots__ = ("bytes_moved", "duration_ms", "ranks")
    BYTES_MOVED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    bytes_moved: int
    duration_ms: float
    ranks: _containers.RepeatedCompositeFieldContainer[RankState]
    def __init__(self, bytes_moved: _Optional[int] = ..., duration_ms: _Optional[float] = ..., ranks: _Optional[_Iterable[_Union[RankState, _Mapping]]] = ...) -> None: ...

class OnloadRequest(_message.Message):
    __slots__ = ("components",)
    COMPONENTS_FIELD_NUMBER: _ClassVar[int]
    components: _containers.RepeatedScalarFieldContainer[TrainerStateComponent]
    def __init__(self, components: _Optional[_Iterable[_Union[TrainerStateComponent, str]]] = ...) -> None: ...

class OnloadResponse(_message.Message):
    __slots__ = ("bytes_moved", "duration_ms", "ranks")
    BYTES_MOVED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    bytes_moved: int
    duration_ms: float
    ranks: _containers.RepeatedCompositeFieldContainer[RankState]
    def __init__(self, bytes_moved: _Optional[int] = ..., duration_ms: _Optional[float] = ..., ranks: _Optional[_Iterable[_Union[RankState, _Mapping]]] = ...) -> None: ...

class PublishWeightsRequest(_message.Message):
    __slots__ = ("bucket_bytes", "checksum_algorithm")
    BUCKET_BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    bucket_bytes: int
    checksum_algorithm: _common_pb2.ChecksumAlgorithm
    def __init__(self, bucket_bytes: _Optional[int] = ..., checksum_algorithm: _Optional[_Union[_common_pb2.ChecksumAlgorithm, str]] = ...) -> None: ...

class PublishWeightsResponse(_message.Message):
    __slots__ = ("version", "bucket_count", "duration_ms")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.WeightVersion
    bucket_count: int
    duration_ms: float
    def __init__(self, version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., bucket_count: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class SaveCheckpointRequest(_message.Message):
    __slots__ = ("directory", "format", "include_optimizer_state")
    DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_OPTIMIZER_STATE_FIELD_NUMBER: _ClassVar[int]
    directory: str
    format: _common_pb2.CheckpointFormat
    include_optimizer_state: bool
    def __init__(self, directory: _Optional[str] = ..., format: _Optional[_Union[_common_pb2.CheckpointFormat, str]] = ..., include_optimizer_state: _Optional[bool] = ...) -> None: ...

class SaveCheckpointResponse(_message.Message):
    __slots__ = ("path", "step", "bytes_written", "duration_ms")
    PATH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BYTES_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    path: str
    step: int
    bytes_written: int
    duration_ms: float
    def __init__(self, path: _Optional[str] = ..., step: _Optional[int] = ..., bytes_written: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class LoadCheckpointRequest(_message.Message):
    __slots__ = ("path", "step", "format", "load_optimizer_state")
    PATH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    LOAD_OPTIMIZER_STATE_FIELD_NUMBER: _ClassVar[int]
    path: str
    step: int
    format: _common_pb2.CheckpointFormat
    load_optimizer_state: bool
    def __init__(self, path: _Optional[str] = ..., step: _Optional[int] = ..., format: _Optional[_Union[_common_pb2.CheckpointFormat, str]] = ..., load_optimizer_state: _Optional[bool] = ...) -> None: ...

class LoadCheckpointResponse(_message.Message):
    __slots__ = ("path", "step", "bytes_read", "duration_ms")
    PATH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    BYTES_READ_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    path: str
    step: int
    bytes_read: int
    duration_ms: float
    def __init__(self, path: _Optional[str] = ..., step: _Optional[int] = ..., bytes_read: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class GetStateRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStateResponse(_message.Message):
    __slots__ = ("step", "published_version", "model_preset", "parameter_count", "activity", "placements", "world_size", "ranks")
    STEP_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODEL_PRESET_FIELD_NUMBER: _ClassVar[int]
    PARAMETER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    RANKS_FIELD_NUMBER: _ClassVar[int]
    step: int
    published_version: _common_pb2.WeightVersion
    model_preset: str
    parameter_count: int
    activity: TrainerActivity
    placements: _containers.RepeatedCompositeFieldContainer[ComponentPlacement]
    world_size: int
    ranks: _containers.RepeatedCompositeFieldContainer[RankState]
    def __init__(self, step: _Optional[int] = ..., published_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., model_preset: _Optional[str] = ..., parameter_count: _Optional[int] = ..., activity: _Optional[_Union[TrainerActivity, str]] = ..., placements: _Optional[_Iterable[_Union[ComponentPlacement, _Mapping]]] = ..., world_size: _Optional[int] = ..., ranks: _Optional[_Iterable[_Union[RankState, _Mapping]]] = ...) -> None: ...

class ComponentPlacement(_message.Message):
    __slots__ = ("component", "placement", "bytes")
    COMPONENT_FIELD_NUMBER: _ClassVar[int]
    PLACEMENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    component: TrainerStateComponent
    placement: MemoryPlacement
    bytes: int
    def __init__(self, component: _Optional[_Union[TrainerStateComponent, str]] = ..., placement: _Optional[_Union[MemoryPlacement, str]] = ..., bytes: _Optional[int] = ...) -> None: ...

class RankState(_message.Message):
    __slots__ = ("rank", "node", "device", "device_memory_allocated_bytes", "device_memory_reserved_bytes", "device_memory_total_bytes", "host_pinned_bytes")
    RANK_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_ALLOCATED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_RESERVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    HOST_PINNED_BYTES_FIELD_NUMBER: _ClassVar[int]
    rank: int
    node: str
    device: str
    device_memory_allocated_bytes: int
    device_memory_reserved_bytes: int
    device_memory_total_bytes: int
    host_pinned_bytes: int
    def __init__(self, rank: _Optional[int] = ..., node: _Optional[str] = ..., device: _Optional[str] = ..., device_memory_allocated_bytes: _Optional[int] = ..., device_memory_reserved_bytes: _Optional[int] = ..., device_memory_total_bytes: _Optional[int] = ..., host_pinned_bytes: _Optional[int] = ...) -> None: ...
