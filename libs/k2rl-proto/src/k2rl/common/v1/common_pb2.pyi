import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TensorDtype(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TENSOR_DTYPE_UNSPECIFIED: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT32: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT16: _ClassVar[TensorDtype]
    TENSOR_DTYPE_BFLOAT16: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT64: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT8_E4M3FN: _ClassVar[TensorDtype]
    TENSOR_DTYPE_FLOAT8_E5M2: _ClassVar[TensorDtype]
    TENSOR_DTYPE_INT64: _ClassVar[TensorDtype]
    TENSOR_DTYPE_INT32: _ClassVar[TensorDtype]
    TENSOR_DTYPE_INT16: _ClassVar[TensorDtype]
    TENSOR_DTYPE_INT8: _ClassVar[TensorDtype]
    TENSOR_DTYPE_UINT8: _ClassVar[TensorDtype]
    TENSOR_DTYPE_BOOL: _ClassVar[TensorDtype]

class ChecksumAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKSUM_ALGORITHM_UNSPECIFIED: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_CRC32: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_SHA256: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_SUM64: _ClassVar[ChecksumAlgorithm]
    CHECKSUM_ALGORITHM_XXH3_64: _ClassVar[ChecksumAlgorithm]

class IpcHandleKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IPC_HANDLE_KIND_UNSPECIFIED: _ClassVar[IpcHandleKind]
    IPC_HANDLE_KIND_CUDA_IPC: _ClassVar[IpcHandleKind]
    IPC_HANDLE_KIND_POSIX_SHM: _ClassVar[IpcHandleKind]

class CheckpointFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHECKPOINT_FORMAT_UNSPECIFIED: _ClassVar[CheckpointFormat]
    CHECKPOINT_FORMAT_HF_SAFETENSORS: _ClassVar[CheckpointFormat]
    CHECKPOINT_FORMAT_TORCH_DCP: _ClassVar[CheckpointFormat]

class WeightUpdateOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WEIGHT_UPDATE_OUTCOME_UNSPECIFIED: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_APPLIED: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_ALREADY_CURRENT: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_STALE_VERSION: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_LAYOUT_MISMATCH: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_BUSY: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_TRANSFER_FAILED: _ClassVar[WeightUpdateOutcome]
    WEIGHT_UPDATE_OUTCOME_DISCARDED: _ClassVar[WeightUpdateOutcome]

class FinishReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FINISH_REASON_UNSPECIFIED: _ClassVar[FinishReason]
    FINISH_REASON_STOP: _ClassVar[FinishReason]
    FINISH_REASON_LENGTH: _ClassVar[FinishReason]
    FINISH_REASON_ABORT: _ClassVar[FinishReason]

class TurnRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TURN_ROLE_UNSPECIFIED: _ClassVar[TurnRole]
    TURN_ROLE_MODEL: _ClassVar[TurnRole]
    TURN_ROLE_TOOL: _ClassVar[TurnRole]
    TURN_ROLE_USER: _ClassVar[TurnRole]
TENSOR_DTYPE_UNSPECIFIED: TensorDtype
TENSOR_DTYPE_FLOAT32: TensorDtype
TENSOR_DTYPE_FLOAT16: TensorDtype
TENSOR_DTYPE_BFLOAT16: TensorDtype
TENSOR_DTYPE_FLOAT64: TensorDtype
TENSOR_DTYPE_FLOAT8_E4M3FN: TensorDtype
TENSOR_DTYPE_FLOAT8_E5M2: TensorDtype
TENSOR_DTYPE_INT64: TensorDtype
TENSOR_DTYPE_INT32: TensorDtype
TENSOR_DTYPE_INT16: TensorDtype
TENSOR_DTYPE_INT8: TensorDtype
TENSOR_DTYPE_UINT8: TensorDtype
TENSOR_DTYPE_BOOL: TensorDtype
CHECKSUM_ALGORITHM_UNSPECIFIED: ChecksumAlgorithm
CHECKSUM_ALGORITHM_CRC32: ChecksumAlgorithm
CHECKSUM_ALGORITHM_SHA256: ChecksumAlgorithm
CHECKSUM_ALGORITHM_SUM64: ChecksumAlgorithm
CHECKSUM_ALGORITHM_XXH3_64: ChecksumAlgorithm
IPC_HANDLE_KIND_UNSPECIFIED: IpcHandleKind
IPC_HANDLE_KIND_CUDA_IPC: IpcHandleKind
IPC_HANDLE_KIND_POSIX_SHM: IpcHandleKind
CHECKPOINT_FORMAT_UNSPECIFIED: CheckpointFormat
CHECKPOINT_FORMAT_HF_SAFETENSORS: CheckpointFormat
CHECKPOINT_FORMAT_TORCH_DCP: CheckpointFormat
WEIGHT_UPDATE_OUTCOME_UNSPECIFIED: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_APPLIED: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_ALREADY_CURRENT: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_STALE_VERSION: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_LAYOUT_MISMATCH: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_BUSY: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_TRANSFER_FAILED: WeightUpdateOutcome
WEIGHT_UPDATE_OUTCOME_DISCARDED: WeightUpdateOutcome
FINISH_REASON_UNSPECIFIED: FinishReason
FINISH_REASON_STOP: FinishReason
FINISH_REASON_LENGTH: FinishReason
FINISH_REASON_ABORT: FinishReason
TURN_ROLE_UNSPECIFIED: TurnRole
TURN_ROLE_MODEL: TurnRole
TURN_ROLE_TOOL: TurnRole
TURN_ROLE_USER: TurnRole

class Checksum(_message.Message):
    __slots__ = ("algorithm", "digest")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    algorithm: ChecksumAlgorithm
    digest: bytes
    def __init__(self, algorithm: _Optional[_Union[ChecksumAlgorithm, str]] = ..., digest: _Optional[bytes] = ...) -> None: ...

class TensorMeta(_message.Message):
    __slots__ = ("name", "shape", "dtype", "byte_offset", "byte_size", "checksum", "tensor_byte_offset")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    BYTE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    BYTE_SIZE_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    TENSOR_BYTE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    dtype: TensorDtype
    byte_offset: int
    byte_size: int
    checksum: Checksum
    tensor_byte_offset: int
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., dtype: _Optional[_Union[TensorDtype, str]] = ..., byte_offset: _Optional[int] = ..., byte_size: _Optional[int] = ..., checksum: _Optional[_Union[Checksum, _Mapping]] = ..., tensor_byte_offset: _Optional[int] = ...) -> None: ...

class WeightBucket(_message.Message):
    __slots__ = ("index", "byte_size", "tensors", "checksum")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    BYTE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    index: int
    byte_size: int
    tensors: _containers.RepeatedCompositeFieldContainer[TensorMeta]
    checksum: Checksum
    def __init__(self, index: _Optional[int] = ..., byte_size: _Optional[int] = ..., tensors: _Optional[_Iterable[_Union[TensorMeta, _Mapping]]] = ..., checksum: _Optional[_Union[Checksum, _Mapping]] = ...) -> None: ...

class IpcHandle(_message.Message):
    __slots__ = ("kind", "cuda_ipc_descriptor", "shm_name", "byte_size", "node", "device_uuid")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CUDA_IPC_DESCRIPTOR_FIELD_NUMBER: _ClassVar[int]
    SHM_NAME_FIELD_NUMBER: _ClassVar[int]
    BYTE_SIZE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_UUID_FIELD_NUMBER: _ClassVar[int]
    kind: IpcHandleKind
    cuda_ipc_descriptor: bytes
    shm_name: str
    byte_size: int
    node: str
    device_uuid: str
    def __init__(self, kind: _Optional[_Union[IpcHandleKind, str]] = ..., cuda_ipc_descriptor: _Optional[bytes] = ..., shm_name: _Optional[str] = ..., byte_size: _Optional[int] = ..., node: _Optional[str] = ..., device_uuid: _Optional[str] = ...) -> None: ...

class WeightVersion(_message.Message):
    __slots__ = ("version", "publish_time", "trainer_step", "total_bytes", "source")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_TIME_FIELD_NUMBER: _ClassVar[int]
    TRAINER_STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    version: int
    publish_time: _timestamp_pb2.Timestamp
    trainer_step: int
    total_bytes: int
    source: str
    def __init__(self, version: _Optional[int] = ..., publish_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., trainer_step: _Optional[int] = ..., total_bytes: _Optional[int] = ..., source: _Optional[str] = ...) -> None: ...

class Turn(_message.Message):
    __slots__ = ("role", "output_token_start", "output_token_end", "weight_version", "tool_name")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_START_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_END_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    role: TurnRole
    output_token_start: int
    output_token_end: int
    weight_version: int
    tool_name: str
    def __init__(self, role: _Optional[_Union[TurnRole, str]] = ..., output_token_start: _Optional[int] = ..., output_token_end: _Optional[int] = ..., weight_version: _Optional[int] = ..., tool_name: _Optional[str] = ...) -> None: ...

class Trajectory(_message.Message):
    __slots__ = ("trajectory_id", "prompt_id", "sample_index", "environment", "prompt_token_ids", "output_token_ids", "output_logprobs", "turns", "finish_reason", "token_budget", "reward", "start_iteration", "resume_count", "metadata")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TRAJECTORY_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    START_ITERATION_FIELD_NUMBER: _ClassVar[int]
    RESUME_COUNT_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    trajectory_id: str
    prompt_id: str
    sample_index: int
    environment: str
    prompt_token_ids: _containers.RepeatedScalarFieldContainer[int]
    output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    output_logprobs: _containers.RepeatedScalarFieldContainer[float]
    turns: _containers.RepeatedCompositeFieldContainer[Turn]
    finish_reason: FinishReason
    token_budget: int
    reward: float
    start_iteration: int
    resume_count: int
    metadata: _containers.ScalarMap[str, str]
    def __init__(self, trajectory_id: _Optional[str] = ..., prompt_id: _Optional[str] = ..., sample_index: _Optional[int] = ..., environment: _Optional[str] = ..., prompt_token_ids: _Optional[_Iterable[int]] = ..., output_token_ids: _Optional[_Iterable[int]] = ..., output_logprobs: _Optional[_Iterable[float]] = ..., turns: _Optional[_Iterable[_Union[Turn, _Mapping]]] = ..., finish_reason: _Optional[_Union[FinishReason, str]] = ..., token_budget: _Optional[int] = ..., reward: _Optional[float] = ..., start_iteration: _Optional[int] = ..., resume_count: _Optional[int] = ..., metadata: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Usage(_message.Message):
    __slots__ = ("prompt_tokens", "completion_tokens", "cached_prompt_tokens")
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    COMPLETION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    prompt_tokens: int
    completion_tokens: int
    cached_prompt_tokens: int
    def __init__(self, prompt_tokens: _Optional[int] = ..., completion_tokens: _Optional[int] = ..., cached_prompt_tokens: _Optional[int] = ...) -> None: ...

class ErrorDetail(_message.Message):
    __slots__ = ("code", "message", "field", "hint", "retryable")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    RETRYABLE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    field: str
    hint: str
    retryable: bool
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ..., hint: _Optional[str] = ..., retryable: _Optional[bool] = ...) -> None: ...

class SamplingParams(_message.Message):
    __slots__ = ("temperature", "top_p", "top_k", "n", "seed", "max_tokens", "min_tokens", "stop_strings", "stop_token_ids", "ignore_eos")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    MIN_TOKENS_FIELD_NUMBER: _ClassVar[int]
    STOP_STRINGS_FIELD_NUMBER: _ClassVar[int]
    STOP_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_EOS_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    top_k: int
    n: int
    seed: int
    max_tokens: int
    min_tokens: int
    stop_strings: _containers.RepeatedScalarFieldContainer[str]
    stop_token_ids: _containers.RepeatedScalarFieldContainer[int]
    ignore_eos: bool
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., n: _Optional[int] = ..., seed: _Optional[int] = ..., max_tokens: _Optional[int] = ..., min_tokens: _Optional[int] = ..., stop_strings: _Optional[_Iterable[str]] = ..., stop_token_ids: _Optional[_Iterable[int]] = ..., ignore_eos: _Optional[bool] = ...) -> None: ...
