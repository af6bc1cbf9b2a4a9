import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from k2rl.common.v1 import common_pb2 as _common_pb2
from k2rl.trainer.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_PENDING: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_STOPPING: _ClassVar[RunState]
    RUN_STATE_STOPPED: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]

class IterationPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ITERATION_PHASE_UNSPECIFIED: _ClassVar[IterationPhase]
    ITERATION_PHASE_INFERENCE_WAKE: _ClassVar[IterationPhase]
    ITERATION_PHASE_ROLLOUT: _ClassVar[IterationPhase]
    ITERATION_PHASE_SCORING: _ClassVar[IterationPhase]
    ITERATION_PHASE_INFERENCE_SLEEP: _ClassVar[IterationPhase]
    ITERATION_PHASE_TRAINER_ONLOAD: _ClassVar[IterationPhase]
    ITERATION_PHASE_TRAIN: _ClassVar[IterationPhase]
    ITERATION_PHASE_TRAINER_OFFLOAD: _ClassVar[IterationPhase]
    ITERATION_PHASE_WEIGHT_UPDATE: _ClassVar[IterationPhase]
    ITERATION_PHASE_CHECKPOINT: _ClassVar[IterationPhase]

class StopMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STOP_MODE_UNSPECIFIED: _ClassVar[StopMode]
    STOP_MODE_AFTER_ITERATION: _ClassVar[StopMode]
    STOP_MODE_IMMEDIATE: _ClassVar[StopMode]

class ScheduleShape(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCHEDULE_SHAPE_UNSPECIFIED: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_CONSTANT: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_LINEAR: _ClassVar[ScheduleShape]
    SCHEDULE_SHAPE_COSINE: _ClassVar[ScheduleShape]

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_STATUS_UNSPECIFIED: _ClassVar[HealthStatus]
    HEALTH_STATUS_SERVING: _ClassVar[HealthStatus]
    HEALTH_STATUS_NOT_SERVING: _ClassVar[HealthStatus]
    HEALTH_STATUS_SERVICE_UNKNOWN: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNREACHABLE: _ClassVar[HealthStatus]
    HEALTH_STATUS_UNAUTHENTICATED: _ClassVar[HealthStatus]
    HEALTH_STATUS_TIMEOUT: _ClassVar[HealthStatus]
    HEALTH_STATUS_NOT_CONFIGURED: _ClassVar[HealthStatus]
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_PENDING: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_STOPPING: RunState
RUN_STATE_STOPPED: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
ITERATION_PHASE_UNSPECIFIED: IterationPhase
ITERATION_PHASE_INFERENCE_WAKE: IterationPhase
ITERATION_PHASE_ROLLOUT: IterationPhase
ITERATION_PHASE_SCORING: IterationPhase
ITERATION_PHASE_INFERENCE_SLEEP: IterationPhase
ITERATION_PHASE_TRAINER_ONLOAD: IterationPhase
ITERATION_PHASE_TRAIN: IterationPhase
ITERATION_PHASE_TRAINER_OFFLOAD: IterationPhase
ITERATION_PHASE_WEIGHT_UPDATE: IterationPhase
ITERATION_PHASE_CHECKPOINT: IterationPhase
STOP_MODE_UNSPECIFIED: StopMode
STOP_MODE_AFTER_ITERATION: StopMode
STOP_MODE_IMMEDIATE: StopMode
SCHEDULE_SHAPE_UNSPECIFIED: ScheduleShape
SCHEDULE_SHAPE_CONSTANT: ScheduleShape
SCHEDULE_SHAPE_LINEAR: ScheduleShape
SCHEDULE_SHAPE_COSINE: ScheduleShape
HEALTH_STATUS_UNSPECIFIED: HealthStatus
HEALTH_STATUS_SERVING: HealthStatus
HEALTH_STATUS_NOT_SERVING: HealthStatus
HEALTH_STATUS_SERVICE_UNKNOWN: HealthStatus
HEALTH_STATUS_UNREACHABLE: HealthStatus
HEALTH_STATUS_UNAUTHENTICATED: HealthStatus
HEALTH_STATUS_TIMEOUT: HealthStatus
HEALTH_STATUS_NOT_CONFIGURED: HealthStatus

class RunConfig(_message.Message):
    __slots__ = ("model_preset", "environments", "iterations", "prompts_per_iteration", "samples_per_prompt", "train_steps_per_iteration", "partial_rollout", "sampling", "temperature_schedule", "rl_loss", "ptx_dataset", "ptx_sequences_per_step", "checkpoint_every_iterations", "checkpoint_directory", "max_concurrent_rollouts", "seed", "labels", "critic_data")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MODEL_PRESET_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_PER_ITERATION_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_PROMPT_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_PER_ITERATION_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    RL_LOSS_FIELD_NUMBER: _ClassVar[int]
    PTX_DATASET_FIELD_NUMBER: _ClassVar[int]
    PTX_SEQUENCES_PER_STEP_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_DIRECTORY_FIELD_NUMBER: _ClassVar[int]
    MAX_CONCURRENT_ROLLOUTS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CRITIC_DATA_FIELD_NUMBER: _ClassVar[int]
    model_preset: str
    environments: _containers.RepeatedCompositeFieldContainer[EnvironmentSpec]
    iterations: int
    prompts_per_iteration: int
    samples_per_prompt: int
    train_steps_per_iteration: int
    partial_rollout: PartialRolloutConfig
    sampling: _common_pb2.SamplingParams
    temperature_schedule: TemperatureSchedule
    rl_loss: _trainer_pb2.RlLossParams
    ptx_dataset: str
    ptx_sequences_per_step: int
    checkpoint_every_iterations: int
    checkpoint_directory: str
    max_concurrent_rollouts: int
    seed: int
    labels: _containers.ScalarMap[str, str]
    critic_data: CriticDataExport
    def __init__(self, model_preset: _Optional[str] = ..., environments: _Optional[_Iterable[_Union[EnvironmentSpec, _Mapping]]] = ..., iterations: _Optional[int] = ..., prompts_per_iteration: _Optional[int] = ..., samples_per_prompt: _Optional[int] = ..., train_steps_per_iteration: _Optional[int] = ..., partial_rollout: _Optional[_Union[PartialRolloutConfig, _Mapping]] = ..., sampling: _Optional[_Union[_common_pb2.SamplingParams, _Mapping]] = ..., temperature_schedule: _Optional[_Union[TemperatureSchedule, _Mapping]] = ..., rl_loss: _Optional[_Union[_trainer_pb2.RlLossParams, _Mapping]] = ..., ptx_dataset: _Optional[str] = ..., ptx_sequences_per_step: _Optional[int] = ..., checkpoint_every_iterations: _Optional[int] = ..., checkpoint_directory: _Optional[str] = ..., max_concurrent_rollouts: _Optional[int] = ..., seed: _Optional[int] = ..., labels: _Optional[_Mapping[str, str]] = ..., critic_data: _Optional[_Union[CriticDataExport, _Mapping]] = ...) -> None: ...

class CriticDataExport(_message.Message):
    __slots__ = ("every_iterations", "dataset", "min_margin", "environments")
    EVERY_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    every_iterations: int
    dataset: str
    min_margin: float
    environments: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, every_iterations: _Optional[int] = ..., dataset: _Optional[str] = ..., min_margin: _Optional[float] = ..., environments: _Optional[_Iterable[str]] = ...) -> None: ...

class EnvironmentSpec(_message.Message):
    __slots__ = ("name", "weight", "dataset", "token_budget", "samples_per_prompt", "max_turns", "temperature_schedule", "options")
    class OptionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_PER_PROMPT_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    weight: float
    dataset: str
    token_budget: int
    samples_per_prompt: int
    max_turns: int
    temperature_schedule: TemperatureSchedule
    options: _containers.ScalarMap[str, str]
    def __init__(self, name: _Optional[str] = ..., weight: _Optional[float] = ..., dataset: _Optional[str] = ..., token_budget: _Optional[int] = ..., samples_per_prompt: _Optional[int] = ..., max_turns: _Optional[int] = ..., temperature_schedule: _Optional[_Union[TemperatureSchedule, _Mapping]] = ..., options: _Optional[_Mapping[str, str]] = ...) -> None: ...

class PartialRolloutConfig(_message.Message):
    __slots__ = ("iteration_token_budget", "segment_token_budget", "max_resumes", "max_version_lag")
    ITERATION_TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEGMENT_TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    MAX_RESUMES_FIELD_NUMBER: _ClassVar[int]
    MAX_VERSION_LAG_FIELD_NUMBER: _ClassVar[int]
    iteration_token_budget: int
    segment_token_budget: int
    max_resumes: int
    max_version_lag: int
    def __init__(self, iteration_token_budget: _Optional[int] = ..., segment_token_budget: _Optional[int] = ..., max_resumes: _Optional[int] = ..., max_version_lag: _Optional[int] = ...) -> None: ...

class TemperatureSchedule(_message.Message):
    __slots__ = ("initial_temperature", "final_temperature", "decay_iterations", "shape")
    INITIAL_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FINAL_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    DECAY_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    initial_temperature: float
    final_temperature: float
    decay_iterations: int
    shape: ScheduleShape
    def __init__(self, initial_temperature: _Optional[float] = ..., final_temperature: _Optional[float] = ..., decay_iterations: _Optional[int] = ..., shape: _Optional[_Union[ScheduleShape, str]] = ...) -> None: ...

class Run(_message.Message):
    __slots__ = ("run_id", "state", "config", "completed_iterations", "current_iteration", "current_phase", "weight_version", "trainer_step", "partial_rollouts_buffered", "create_time", "start_time", "end_time", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_ITERATION_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PHASE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    TRAINER_STEP_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_ROLLOUTS_BUFFERED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    config: RunConfig
    completed_iterations: int
    current_iteration: int
    current_phase: IterationPhase
    weight_version: int
    trainer_step: int
    partial_rollouts_buffered: int
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    error: _common_pb2.ErrorDetail
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., config: _Optional[_Union[RunConfig, _Mapping]] = ..., completed_iterations: _Optional[int] = ..., current_iteration: _Optional[int] = ..., current_phase: _Optional[_Union[IterationPhase, str]] = ..., weight_version: _Optional[int] = ..., trainer_step: _Optional[int] = ..., partial_rollouts_buffered: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class StartRunRequest(_message.Message):
    __slots__ = ("config", "run_id", "resume")
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_FIELD_NUMBER: _ClassVar[int]
    config: RunConfig
    run_id: str
    resume: bool
    def __init__(self, config: _Optional[_Union[RunConfig, _Mapping]] = ..., run_id: _Optional[str] = ..., resume: _Optional[bool] = ...) -> None: ...

class StartRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class GetRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "states")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    STATES_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    states: _containers.RepeatedScalarFieldContainer[RunState]
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., states: _Optional[_Iterable[_Union[RunState, str]]] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs", "next_page_token")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[Run]
    next_page_token: str
    def __init__(self, runs: _Optional[_Iterable[_Union[Run, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class StopRunRequest(_message.Message):
    __slots__ = ("run_id", "mode", "reason")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    mode: StopMode
    reason: str
    def __init__(self, run_id: _Optional[str] = ..., mode: _Optional[_Union[StopMode, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class StopRunResponse(_message.Message):
    __slots__ = ("run",)
    RUN_FIELD_NUMBER: _ClassVar[int]
    run: Run
    def __init__(self, run: _Optional[_Union[Run, _Mapping]] = ...) -> None: ...

class ListIterationsRequest(_message.Message):
    __slots__ = ("run_id", "page_size", "page_token")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    page_size: int
    page_token: str
    def __init__(self, run_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListIterationsResponse(_message.Message):
    __slots__ = ("iterations", "next_page_token")
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    iterations: _containers.RepeatedCompositeFieldContainer[IterationRecord]
    next_page_token: str
    def __init__(self, iterations: _Optional[_Iterable[_Union[IterationRecord, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class IterationRecord(_message.Message):
    __slots__ = ("iteration", "start_time", "end_time", "phases", "rollout_weight_version", "new_weight_version", "rollout", "environments", "train_steps")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    PHASES_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    NEW_WEIGHT_VERSION_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENTS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_STEPS_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    phases: _containers.RepeatedCompositeFieldContainer[PhaseTiming]
    rollout_weight_version: int
    new_weight_version: int
    rollout: RolloutStats
    environments: _containers.RepeatedCompositeFieldContainer[EnvironmentStats]
    train_steps: _containers.RepeatedCompositeFieldContainer[_trainer_pb2.TrainStepMetrics]
    def __init__(self, iteration: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., phases: _Optional[_Iterable[_Union[PhaseTiming, _Mapping]]] = ..., rollout_weight_version: _Optional[int] = ..., new_weight_version: _Optional[int] = ..., rollout: _Optional[_Union[RolloutStats, _Mapping]] = ..., environments: _Optional[_Iterable[_Union[EnvironmentStats, _Mapping]]] = ..., train_steps: _Optional[_Iterable[_Union[_trainer_pb2.TrainStepMetrics, _Mapping]]] = ...) -> None: ...

class PhaseTiming(_message.Message):
    __slots__ = ("phase", "start_time", "duration_ms")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    phase: IterationPhase
    start_time: _timestamp_pb2.Timestamp
    duration_ms: float
    def __init__(self, phase: _Optional[_Union[IterationPhase, str]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class RolloutStats(_message.Message):
    __slots__ = ("prompts", "trajectories_finished", "trajectories_resumed", "trajectories_paused", "trajectories_dropped", "generated_tokens", "generation_tokens_per_second")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FINISHED_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_RESUMED_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_PAUSED_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_DROPPED_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    prompts: int
    trajectories_finished: int
    trajectories_resumed: int
    trajectories_paused: int
    trajectories_dropped: int
    generated_tokens: int
    generation_tokens_per_second: float
    def __init__(self, prompts: _Optional[int] = ..., trajectories_finished: _Optional[int] = ..., trajectories_resumed: _Optional[int] = ..., trajectories_paused: _Optional[int] = ..., trajectories_dropped: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., generation_tokens_per_second: _Optional[float] = ...) -> None: ...

class EnvironmentStats(_message.Message):
    __slots__ = ("name", "trajectories", "reward_mean", "reward_std", "pass_rate", "mean_response_tokens", "truncated_fraction")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_FIELD_NUMBER: _ClassVar[int]
    REWARD_MEAN_FIELD_NUMBER: _ClassVar[int]
    REWARD_STD_FIELD_NUMBER: _ClassVar[int]
    PASS_RATE_FIELD_NUMBER: _ClassVar[int]
    MEAN_RESPONSE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FRACTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    trajectories: int
    reward_mean: float
    reward_std: float
    pass_rate: float
    mean_response_tokens: float
    truncated_fraction: float
    def __init__(self, name: _Optional[str] = ..., trajectories: _Optional[int] = ..., reward_mean: _Optional[float] = ..., reward_std: _Optional[float] = ..., pass_rate: _Optional[float] = ..., mean_response_tokens: _Optional[float] = ..., truncated_fraction: _Optional[float] = ...) -> None: ...

class WatchRunRequest(_message.Message):
    __slots__ = ("run_id", "after_sequence")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    after_sequence: int
    def __init__(self, run_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class WatchRunResponse(_message.Message):
    __slots__ = ("sequence", "event_time", "iteration", "phase_started", "phase_finished", "iteration_finished", "state_changed", "rollout_progress", "error")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    PHASE_STARTED_FIELD_NUMBER: _ClassVar[int]
    PHASE_FINISHED_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FINISHED_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGED_FIELD_NUMBER: _ClassVar[int]
    ROLLOUT_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    event_time: _timestamp_pb2.Timestamp
    iteration: int
    phase_started: PhaseStarted
    phase_finished: PhaseFinished
    iteration_finished: IterationRecord
    state_changed: RunStateChanged
    rollout_progress: RolloutProgress
    error: RunError
    def __init__(self, sequence: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., iteration: _Optional[int] = ..., phase_started: _Optional[_Union[PhaseStarted, _Mapping]] = ..., phase_finished: _Optional[_Union[PhaseFinished, _Mapping]] = ..., iteration_finished: _Optional[_Union[IterationRecord, _Mapping]] = ..., state_changed: _Optional[_Union[RunStateChanged, _Mapping]] = ..., rollout_progress: _Optional[_Union[RolloutProgress, _Mapping]] = ..., error: _Optional[_Union[RunError, _Mapping]] = ...) -> None: ...

class PhaseStarted(_message.Message):
    __slots__ = ("phase",)
    PHASE_FIELD_NUMBER: _ClassVar[int]
    phase: IterationPhase
    def __init__(self, phase: _Optional[_Union[IterationPhase, str]] = ...) -> None: ...

class PhaseFinished(_message.Message):
    __slots__ = ("phase", "duration_ms")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    DURATION_MS_FIELD_NUMBER: _ClassVar[int]
    phase: IterationPhase
    duration_ms: float
    def __init__(self, phase: _Optional[_Union[IterationPhase, str]] = ..., duration_ms: _Optional[float] = ...) -> None: ...

class RunStateChanged(_message.Message):
    __slots__ = ("previous_state", "state", "reason")
    PREVIOUS_STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    previous_state: RunState
    state: RunState
    reason: str
    def __init__(self, previous_state: _Optional[_Union[RunState, str]] = ..., state: _Optional[_Union[RunState, str]] = ..., reason: _Optional[str] = ...) -> None: ...

class RolloutProgress(_message.Message):
    __slots__ = ("trajectories_finished", "trajectories_target", "trajectories_running", "generated_tokens", "iteration_token_budget")
    TRAJECTORIES_FINISHED_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_TARGET_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORIES_RUNNING_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ITERATION_TOKEN_BUDGET_FIELD_NUMBER: _ClassVar[int]
    trajectories_finished: int
    trajectories_target: int
    trajectories_running: int
    generated_tokens: int
    iteration_token_budget: int
    def __init__(self, trajectories_finished: _Optional[int] = ..., trajectories_target: _Optional[int] = ..., trajectories_running: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., iteration_token_budget: _Optional[int] = ...) -> None: ...

class RunError(_message.Message):
    __slots__ = ("error", "phase", "will_retry")
    ERROR_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    WILL_RETRY_FIELD_NUMBER: _ClassVar[int]
    error: _common_pb2.ErrorDetail
    phase: IterationPhase
    will_retry: bool
    def __init__(self, error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., phase: _Optional[_Union[IterationPhase, str]] = ..., will_retry: _Optional[bool] = ...) -> None: ...

class GetSystemStatusRequest(_message.Message):
    __slots__ = ("names", "probe_timeout_ms")
    NAMES_FIELD_NUMBER: _ClassVar[int]
    PROBE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    names: _containers.RepeatedScalarFieldContainer[str]
    probe_timeout_ms: int
    def __init__(self, names: _Optional[_Iterable[str]] = ..., probe_timeout_ms: _Optional[int] = ...) -> None: ...

class GetSystemStatusResponse(_message.Message):
    __slots__ = ("dependencies", "healthy", "check_time", "controller_version")
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    CHECK_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTROLLER_VERSION_FIELD_NUMBER: _ClassVar[int]
    dependencies: _containers.RepeatedCompositeFieldContainer[DependencyStatus]
    healthy: bool
    check_time: _timestamp_pb2.Timestamp
    controller_version: str
    def __init__(self, dependencies: _Optional[_Iterable[_Union[DependencyStatus, _Mapping]]] = ..., healthy: _Optional[bool] = ..., check_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., controller_version: _Optional[str] = ...) -> None: ...

class DependencyStatus(_message.Message):
    __slots__ = ("name", "address", "health_service", "status", "latency_ms", "error", "required", "tls")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_SERVICE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    REQUIRED_FIELD_NUMBER: _ClassVar[int]
    TLS_FIELD_NUMBER: _ClassVar[int]
    name: str
    address: str
    health_service: str
    status: HealthStatus
    latency_ms: float
    error: _common_pb2.ErrorDetail
    required: bool
    tls: bool
    def __init__(self, name: _Optional[str] = ..., address: _Optional[str] = ..., health_service: _Optional[str] = ..., status: _Optional[_Union[HealthStatus, str]] = ..., latency_ms: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., required: _Optional[bool] = ..., tls: _Optional[bool] = ...) -> None: ...
