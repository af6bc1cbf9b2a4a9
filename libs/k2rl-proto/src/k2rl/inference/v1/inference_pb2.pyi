from k2rl.common.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SleepLevel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SLEEP_LEVEL_UNSPECIFIED: _ClassVar[SleepLevel]
    SLEEP_LEVEL_1: _ClassVar[SleepLevel]
    SLEEP_LEVEL_2: _ClassVar[SleepLevel]

class MemoryPool(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MEMORY_POOL_UNSPECIFIED: _ClassVar[MemoryPool]
    MEMORY_POOL_WEIGHTS: _ClassVar[MemoryPool]
    MEMORY_POOL_KV_CACHE: _ClassVar[MemoryPool]

class SleepState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SLEEP_STATE_UNSPECIFIED: _ClassVar[SleepState]
    SLEEP_STATE_AWAKE: _ClassVar[SleepState]
    SLEEP_STATE_LEVEL_1: _ClassVar[SleepState]
    SLEEP_STATE_LEVEL_2: _ClassVar[SleepState]
    SLEEP_STATE_WEIGHTS_ONLY: _ClassVar[SleepState]

class InFlightPolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IN_FLIGHT_POLICY_UNSPECIFIED: _ClassVar[InFlightPolicy]
    IN_FLIGHT_POLICY_REFUSE: _ClassVar[InFlightPolicy]
    IN_FLIGHT_POLICY_PAUSE: _ClassVar[InFlightPolicy]
    IN_FLIGHT_POLICY_ABORT: _ClassVar[InFlightPolicy]

class InferenceBackend(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INFERENCE_BACKEND_UNSPECIFIED: _ClassVar[InferenceBackend]
    INFERENCE_BACKEND_NATIVE: _ClassVar[InferenceBackend]
    INFERENCE_BACKEND_VLLM: _ClassVar[InferenceBackend]
SLEEP_LEVEL_UNSPECIFIED: SleepLevel
SLEEP_LEVEL_1: SleepLevel
SLEEP_LEVEL_2: SleepLevel
MEMORY_POOL_UNSPECIFIED: MemoryPool
MEMORY_POOL_WEIGHTS: MemoryPool
MEMORY_POOL_KV_CACHE: MemoryPool
SLEEP_STATE_UNSPECIFIED: SleepState
SLEEP_STATE_AWAKE: SleepState
SLEEP_STATE_LEVEL_1: SleepState
SLEEP_STATE_LEVEL_2: SleepState
SLEEP_STATE_WEIGHTS_ONLY: SleepState
IN_FLIGHT_POLICY_UNSPECIFIED: InFlightPolicy
IN_FLIGHT_POLICY_REFUSE: InFlightPolicy
IN_FLIGHT_POLICY_PAUSE: InFlightPolicy
IN_FLIGHT_POLICY_ABORT: InFlightPolicy
INFERENCE_BACKEND_UNSPECIFIED: InferenceBackend
INFERENCE_BACKEND_NATIVE: InferenceBackend
INFERENCE_BACKEND_VLLM: InferenceBackend

class TokenIds(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("request_id", "prompt_token_ids", "prompt_text", "sampling_params", "resume_output_token_ids", "min_weight_version", "priority", "return_text")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TEXT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_PARAMS_FIELD_NUMBER: _ClassVar[int]
    RESUME_OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    MIN_WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    RETURN_TEXT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    prompt_token_ids: TokenIds
    prompt_text: str
    sampling_params: _common_pb2.SamplingParams
    resume_output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    min_weight_version: int
    priority: int
    return_text: bool
    def __init__(self, request_id: _Optional[str] = ..., prompt_token_ids: _Optional[_Union[TokenIds, _Mapping]] = ..., prompt_text: _Optional[str] = ..., sampling_params: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., resume_output_token_ids: _Optional[_Iterable[int]] = ..., min_weight_version: _Optional[int] = ..., priority: _Optional[int] = ..., return_text: _Optional[bool] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("sample_index", "token_ids", "logprobs", "text", "finish_reason", "weight_version", "usage", "matched_stop_string", "matched_stop_token_id")
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MATCHED_STOP_STRING_FIELD_NUMBER: _ClassVar[int]
    MATCHED_STOP_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    sample_index: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    text: str
    finish_reason: _common_pb2.FinishReason
    weight_version: int
    usage: _common_pb2.Usage
    matched_stop_string: str
    matched_stop_token_id: int
    def __init__(self, sample_index: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., text: _Optional[str] = ..., finish_reason: _Optional[_Union[_common_pb2.FinishReason, str]] = ..., weight_version: _Optional[int] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ..., matched_stop_string: _Optional[str] = ..., matched_stop_token_id: _Optional[int] = ...) -> None: ...

class AbortRequest(_message.Message):
    __slots__ = ("request_ids", "abort_all")
    REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    ABORT_ALL_FIELD_NUMBER: _ClassVar[int]
    request_ids: _containers.RepeatedScalarFieldContainer[str]
    abort_all: bool
    def __init__(self, request_ids: _Optional[_Iterable[str]] = ..., abort_all: _Optional[bool] = ...) -> None: ...

class AbortResponse(_message.Message):
    __slots__ = ("partial_generations", "not_running_request_ids")
    PARTIAL_GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    NOT_RUNNING_REQUEST_IDS_FIELD_NUMBER: _ClassVar[int]
    partial_generations: _containers.RepeatedCompositeFieldContainer[PartialGeneration]
    not_running_request_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, partial_generations: _Optional[_Iterable[_Union[PartialGeneration, _Mapping]]] = ..., not_running_request_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class PartialGeneration(_message.Message):
    __slots__ = ("request_id", "sample_index", "output_token_ids", "output_logprobs", "turns", "usage")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    sample_index: int
    output_token_ids: _containers.RepeatedScalarFieldContainer[int]
    output_logprobs: _containers.RepeatedScalarFieldContainer[float]
    turns: _containers.RepeatedCompositeFieldContainer[_common_pb2.Turn]
    usage: _common_pb2.Usage
    def __init__(self, request_id: _Optional[str] = ..., sample_index: _Optional[int] = ..., output_token_ids: _Optional[_Iterable[int]] = ..., output_logprobs: _Optional[_Iterable[float]] = ..., turns: _Optional[_Iterable[_Union[_common_pb2.Turn, _Mapping]]] = ..., usage: _Optional[_Union[_common_pb2.Usage, _Mapping]] = ...) -> None: ...

class SleepRequest(_message.Message):
    __slots__ = ("level",)
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    level: SleepLevel
    def __init__(self, level: _Optional[_Union[SleepLevel, str]] = ...) -> None: ...

class SleepResponse(_message.Message):
    __slots__ = ("state", "freed_device_bytes", "duration_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    FREED_DEVICE_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    state: SleepState
    freed_device_bytes: int
    duration_ms: float
    def __init__(self, state: _Optional[_Union[SleepState, str]] = ..., freed_device_bytes: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class WakeUpRequest(_message.Message):
    __slots__ = ("pools",)
    POOLS_FIELD_NUMBER: _ClassVar[int]
    pools: _containers.RepeatedScalarFieldContainer[MemoryPool]
    def __init__(self, pools: _Optional[_Iterable[_Union[MemoryPool, str]]] = ...) -> None: ...

class WakeUpResponse(_message.Message):
    __slots__ = ("state", "device_memory_used_bytes", "duration_ms")
    STATE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    state: SleepState
    device_memory_used_bytes: int
    duration_ms: float
    def __init__(self, state: _Optional[_Union[SleepState, str]] = ..., device_memory_used_bytes: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class UpdateWeightsRequest(_message.Message):
    __slots__ = ("begin", "bucket", "commit")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    begin: UpdateWeightsBegin
    bucket: UpdateWeightsBucket
    commit: UpdateWeightsCommit
    def __init__(self, begin: _Optional[_Union[UpdateWeightsBegin, _Mapping]] = ..., bucket: _Optional[_Union[UpdateWeightsBucket, _Mapping]] = ..., commit: _Optional[_Union[UpdateWeightsCommit, _Mapping]] = ...) -> None: ...

class UpdateWeightsBegin(_message.Message):
    __slots__ = ("version", "bucket_count", "slots", "in_flight_policy", "skip_checksum_verification")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_POLICY_FIELD_NUMBER: _ClassVar[int]
    SKIP_CHECKSUM_VERIFICATION_FIELD_NUMBER: _ClassVar[int]
    version: _common_pb2.WeightVersion
    bucket_count: int
    slots: _containers.RepeatedCompositeFieldContainer[IpcSlot]
    in_flight_policy: InFlightPolicy
    skip_checksum_verification: bool
    def __init__(self, version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., bucket_count: _Optional[int] = ..., slots: _Optional[_Iterable[_Union[IpcSlot, _Mapping]]] = ..., in_flight_policy: _Optional[_Union[InFlightPolicy, str]] = ..., skip_checksum_verification: _Optional[bool] = ...) -> None: ...

class IpcSlot(_message.Message):
    __slots__ = ("slot", "handle")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    HANDLE_FIELD_NUMBER: _ClassVar[int]
    slot: int
    handle: _common_pb2.IpcHandle
    def __init__(self, slot: _Optional[int] = ..., handle: _Optional[_Union[_common_pb2.IpcHandle, _Mapping]] = ...) -> None: ...

class UpdateWeightsBucket(_message.Message):
    __slots__ = ("bucket", "slot", "slot_byte_offset")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    SLOT_BYTE_OFFSET_FIELD_NUMBER: _ClassVar[int]
    bucket: _common_pb2.WeightBucket
    slot: int
    slot_byte_offset: int
    def __init__(self, bucket: _Optional[_Union[_common_pb2.WeightBucket, _Mapping]] = ..., slot: _Optional[int] = ..., slot_byte_offset: _Optional[int] = ...) -> None: ...

class UpdateWeightsCommit(_message.Message):
    __slots__ = ("version", "bucket_count")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNT_FIELD_NUMBER: _ClassVar[int]
    version: int
    bucket_count: int
    def __init__(self, version: _Optional[int] = ..., bucket_count: _Optional[int] = ...) -> None: ...

class UpdateWeightsResponse(_message.Message):
    __slots__ = ("bucket_loaded", "result")
    BUCKET_LOADED_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    bucket_loaded: UpdateWeightsBucketLoaded
    result: UpdateWeightsResult
    def __init__(self, bucket_loaded: _Optional[_Union[UpdateWeightsBucketLoaded, _Mapping]] = ..., result: _Optional[_Union[UpdateWeightsResult, _Mapping]] = ...) -> None: ...

class UpdateWeightsBucketLoaded(_message.Message):
    __slots__ = ("bucket_index", "slot")
    BUCKET_INDEX_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    bucket_index: int
    slot: int
    def __init__(self, bucket_index: _Optional[int] = ..., slot: _Optional[int] = ...) -> None: ...

class UpdateWeightsResult(_message.Message):
    __slots__ = ("outcome", "current_version", "error", "bytes_loaded", "duration_ms")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CURRENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BYTES_LOADED_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    outcome: _common_pb2.WeightUpdateOutcome
    current_version: _common_pb2.WeightVersion
    error: _common_pb2.ErrorDetail
    bytes_loaded: int
    duration_ms: float
    def __init__(self, outcome: _Optional[_Union[_common_pb2.WeightUpdateOutcome, str]] = ..., current_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., bytes_loaded: _Optional[int] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class GetModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetModelInfoResponse(_message.Message):
    __slots__ = ("architecture", "model_preset", "config_json", "vocab_size", "max_context_length", "weight_version", "sleep_state", "tokenizer", "backend", "tensor_parallel_size", "dtype", "devices", "max_running_requests")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    MODEL_PRESET_FIELD_NUMBER: _ClassVar[int]
    CONFIG_JSON_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTEXT_LENGTH_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SLEEP_STATE_FIELD_NUMBER: _ClassVar[int]
    TOKENIZER_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TENSOR_PARALLEL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    model_preset: str
    config_json: str
    vocab_size: int
    max_context_length: int
    weight_version: _common_pb2.WeightVersion
    sleep_state: SleepState
    tokenizer: TokenizerInfo
    backend: InferenceBackend
    tensor_parallel_size: int
    dtype: _common_pb2.TensorDtype
    devices: _containers.RepeatedScalarFieldContainer[str]
    max_running_requests: int
    def __init__(self, architecture: _Optional[str] = ..., model_preset: _Optional[str] = ..., config_json: _Optional[str] = ..., vocab_size: _Optional[int] = ..., max_context_length: _Optional[int] = ..., weight_version: _Optional[_Union[_common_pb2.WeightVersion, _Mapping]] = ..., sleep_state: _Optional[_Union[SleepState, str]] = ..., tokenizer: _Optional[_Union[TokenizerInfo, _Mapping]] = ..., backend: _Optional[_Union[InferenceBackend, str]] = ..., tensor_parallel_size: _Optional[int] = ..., dtype: _Optional[_Union[_common_pb2.TensorDtype, str]] = ..., devices: _Optional[_Iterable[str]] = ..., max_running_requests: _Optional[int] = ...) -> None: ...

class TokenizerInfo(_message.Message):
    __slots__ = ("name_or_path", "vocab_size", "eos_token_ids", "bos_token_id", "pad_token_id", "chat_template")
    NAME_OR_PATH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZE_FIELD_NUMBER: _ClassVar[int]
    EOS_TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    BOS_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    PAD_TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    CHAT_TEMPLATE_FIELD_NUMBER: _ClassVar[int]
    name_or_path: str
    vocab_size: int
    eos_token_ids: _containers.RepeatedScalarFieldContainer[int]
    bos_token_id: int
    pad_token_id: int
    chat_template: str
    def __init__(self, name_or_path: _Optional[str] = ..., vocab_size: _Optional[int] = ..., eos_token_ids: _Optional[_Iterable[int]] = ..., bos_token_id: _Optional[int] = ..., pad_token_id: _Optional[int] = ..., chat_template: _Optional[str] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("running_requests", "waiting_requests", "kv_cache_usage", "kv_cache_capacity_tokens", "prompt_tokens_total", "cached_prompt_tokens_total", "generated_tokens_total", "generation_tokens_per_second", "weight_version")
    RUNNING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    WAITING_REQUESTS_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_CAPACITY_TOKENS_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    CACHED_PROMPT_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    running_requests: int
    waiting_requests: int
    kv_cache_usage: float
    kv_cache_capacity_tokens: int
    prompt_tokens_total: int
    cached_prompt_tokens_total: int
    generated_tokens_total: int
    generation_tokens_per_second: float
    weight_version: int
    def __init__(self, running_requests: _Optional[int] = ..., waiting_requests: _Optional[int] = ..., kv_cache_usage: _Optional[float] = ..., kv_cache_capacity_tokens: _Optional[int] = ..., prompt_tokens_total: _Optional[int] = ..., cached_prompt_tokens_total: _Optional[int] = ..., generated_tokens_total: _Optional[int] = ..., generation_tokens_per_second: _Optional[float] = ..., weight_version: _Optional[int] = ...) -> None: ...
