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

class Language(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LANGUAGE_UNSPECIFIED: _ClassVar[Language]
    LANGUAGE_PYTHON: _ClassVar[Language]
    LANGUAGE_BASH: _ClassVar[Language]
    LANGUAGE_CPP: _ClassVar[Language]

class ExecutionStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATUS_UNSPECIFIED: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_OK: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_COMPILE_ERROR: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_RUNTIME_ERROR: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_TIMEOUT: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_MEMORY_LIMIT: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_OUTPUT_LIMIT: _ClassVar[ExecutionStatus]
    EXECUTION_STATUS_SANDBOX_ERROR: _ClassVar[ExecutionStatus]

class OutputMatch(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_MATCH_UNSPECIFIED: _ClassVar[OutputMatch]
    OUTPUT_MATCH_EXACT: _ClassVar[OutputMatch]
    OUTPUT_MATCH_TRIMMED_LINES: _ClassVar[OutputMatch]
    OUTPUT_MATCH_TOKENS: _ClassVar[OutputMatch]

class SandboxRuntime(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SANDBOX_RUNTIME_UNSPECIFIED: _ClassVar[SandboxRuntime]
    SANDBOX_RUNTIME_PROCESS: _ClassVar[SandboxRuntime]
    SANDBOX_RUNTIME_KUBERNETES: _ClassVar[SandboxRuntime]
LANGUAGE_UNSPECIFIED: Language
LANGUAGE_PYTHON: Language
LANGUAGE_BASH: Language
LANGUAGE_CPP: Language
EXECUTION_STATUS_UNSPECIFIED: ExecutionStatus
EXECUTION_STATUS_OK: ExecutionStatus
EXECUTION_STATUS_COMPILE_ERROR: ExecutionStatus
EXECUTION_STATUS_RUNTIME_ERROR: ExecutionStatus
EXECUTION_STATUS_TIMEOUT: ExecutionStatus
EXECUTION_STATUS_MEMORY_LIMIT: ExecutionStatus
EXECUTION_STATUS_OUTPUT_LIMIT: ExecutionStatus
EXECUTION_STATUS_SANDBOX_ERROR: ExecutionStatus
OUTPUT_MATCH_UNSPECIFIED: OutputMatch
OUTPUT_MATCH_EXACT: OutputMatch
OUTPUT_MATCH_TRIMMED_LINES: OutputMatch
OUTPUT_MATCH_TOKENS: OutputMatch
SANDBOX_RUNTIME_UNSPECIFIED: SandboxRuntime
SANDBOX_RUNTIME_PROCESS: SandboxRuntime
SANDBOX_RUNTIME_KUBERNETES: SandboxRuntime

class ResourceLimits(_message.Message):
    __slots__ = ("wall_time_ms", "cpu_time_ms", "memory_bytes", "max_processes", "max_output_bytes", "max_file_size_bytes")
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PROCESSES_FIELD_NUMBER: _ClassVar[int]
    MAX_OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_FILE_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    wall_time_ms: int
    cpu_time_ms: int
    memory_bytes: int
    max_processes: int
    max_output_bytes: int
    max_file_size_bytes: int
    def __init__(self, wall_time_ms: _Optional[int] = ..., cpu_time_ms: _Optional[int] = ..., memory_bytes: _Optional[int] = ..., max_processes: _Optional[int] = ..., max_output_bytes: _Optional[int] = ..., max_file_size_bytes: _Optional[int] = ...) -> None: ...

class TestCase(_message.Message):
    __slots__ = ("name", "expected_stdout", "test_file", "stdin", "match", "float_tolerance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_STDOUT_FIELD_NUMBER: _ClassVar[int]
    TEST_FILE_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    MATCH_FIELD_NUMBER: _ClassVar[int]
    FLOAT_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    expected_stdout: bytes
    test_file: str
    stdin: bytes
    match: OutputMatch
    float_tolerance: float
    def __init__(self, name: _Optional[str] = ..., expected_stdout: _Optional[bytes] = ..., test_file: _Optional[str] = ..., stdin: _Optional[bytes] = ..., match: _Optional[_Union[OutputMatch, str]] = ..., float_tolerance: _Optional[float] = ...) -> None: ...

class ExecuteRequest(_message.Message):
    __slots__ = ("language", "code", "command", "stdin", "files", "env", "limits", "test_cases", "stop_on_first_failure", "session_id")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    STDIN_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    TEST_CASES_FIELD_NUMBER: _ClassVar[int]
    STOP_ON_FIRST_FAILURE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    language: Language
    code: str
    command: _containers.RepeatedScalarFieldContainer[str]
    stdin: bytes
    files: _containers.ScalarMap[str, bytes]
    env: _containers.ScalarMap[str, str]
    limits: ResourceLimits
    test_cases: _containers.RepeatedCompositeFieldContainer[TestCase]
    stop_on_first_failure: bool
    session_id: str
    def __init__(self, language: _Optional[_Union[Language, str]] = ..., code: _Optional[str] = ..., command: _Optional[_Iterable[str]] = ..., stdin: _Optional[bytes] = ..., files: _Optional[_Mapping[str, bytes]] = ..., env: _Optional[_Mapping[str, str]] = ..., limits: _Optional[_Union[ResourceLimits, _Mapping]] = ..., test_cases: _Optional[_Iterable[_Union[TestCase, _Mapping]]] = ..., stop_on_first_failure: _Optional[bool] = ..., session_id: _Optional[str] = ...) -> None: ...

class RunResult(_message.Message):
    __slots__ = ("status", "exit_code", "signal", "stdout", "stderr", "stdout_truncated", "stderr_truncated", "wall_time_ms", "cpu_time_ms", "peak_memory_bytes")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    EXIT_CODE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    STDOUT_FIELD_NUMBER: _ClassVar[int]
    STDERR_FIELD_NUMBER: _ClassVar[int]
    STDOUT_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    STDERR_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    WALL_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    PEAK_MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    status: ExecutionStatus
    exit_code: int
    signal: int
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool
    wall_time_ms: float
    cpu_time_ms: float
    peak_memory_bytes: int
    def __init__(self, status: _Optional[_Union[ExecutionStatus, str]] = ..., exit_code: _Optional[int] = ..., signal: _Optional[int] = ..., stdout: _Optional[bytes] = ..., stderr: _Optional[bytes] = ..., stdout_truncated: _Optional[bool] = ..., stderr_truncated: _Optional[bool] = ..., wall_time_ms: _Optional[float] = ..., cpu_time_ms: _Optional[float] = ..., peak_memory_bytes: _Optional[int] = ...) -> None: ...

class TestResult(_message.Message):
    __slots__ = ("name", "passed", "skipped", "run", "failure_message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    FAILURE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    skipped: bool
    run: RunResult
    failure_message: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., skipped: _Optional[bool] = ..., run: _Optional[_Union[RunResult, _Mapping]] = ..., failure_message: _Optional[str] = ...) -> None: ...

class ExecuteResponse(_message.Message):
    __slots__ = ("status", "run", "compile", "test_results", "tests_passed", "error", "executor_id")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    RUN_FIELD_NUMBER: _ClassVar[int]
    COMPILE_FIELD_NUMBER: _ClassVar[int]
    TEST_RESULTS_FIELD_NUMBER: _ClassVar[int]
    TESTS_PASSED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    EXECUTOR_ID_FIELD_NUMBER: _ClassVar[int]
    status: ExecutionStatus
    run: RunResult
    compile: RunResult
    test_results: _containers.RepeatedCompositeFieldContainer[TestResult]
    tests_passed: int
    error: _common_pb2.ErrorDetail
    executor_id: str
    def __init__(self, status: _Optional[_Union[ExecutionStatus, str]] = ..., run: _Optional[_Union[RunResult, _Mapping]] = ..., compile: _Optional[_Union[RunResult, _Mapping]] = ..., test_results: _Optional[_Iterable[_Union[TestResult, _Mapping]]] = ..., tests_passed: _Optional[int] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ..., executor_id: _Optional[str] = ...) -> None: ...

class ExecuteBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ExecuteRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ExecuteRequest, _Mapping]]] = ...) -> None: ...

class ExecuteBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ExecuteResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ExecuteResponse, _Mapping]]] = ...) -> None: ...

class CreateSessionRequest(_message.Message):
    __slots__ = ("limits", "files", "idle_timeout_ms", "image", "labels")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    IDLE_TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    limits: ResourceLimits
    files: _containers.ScalarMap[str, bytes]
    idle_timeout_ms: int
    image: str
    labels: _containers.ScalarMap[str, str]
    def __init__(self, limits: _Optional[_Union[ResourceLimits, _Mapping]] = ..., files: _Optional[_Mapping[str, bytes]] = ..., idle_timeout_ms: _Optional[int] = ..., image: _Optional[str] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class CreateSessionResponse(_message.Message):
    __slots__ = ("session_id", "expire_time", "workdir")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    WORKDIR_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    expire_time: _timestamp_pb2.Timestamp
    workdir: str
    def __init__(self, session_id: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., workdir: _Optional[str] = ...) -> None: ...

class CloseSessionRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class CloseSessionResponse(_message.Message):
    __slots__ = ("executions", "cpu_time_ms")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    CPU_TIME_MS_FIELD_NUMBER: _ClassVar[int]
    executions: int
    cpu_time_ms: float
    def __init__(self, executions: _Optional[int] = ..., cpu_time_ms: _Optional[float] = ...) -> None: ...

class ReadFileRequest(_message.Message):
    __slots__ = ("session_id", "path", "offset", "max_bytes")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MAX_BYTES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    offset: int
    max_bytes: int
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ..., offset: _Optional[int] = ..., max_bytes: _Optional[int] = ...) -> None: ...

class ReadFileResponse(_message.Message):
    __slots__ = ("content", "file_size", "truncated")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    file_size: int
    truncated: bool
    def __init__(self, content: _Optional[bytes] = ..., file_size: _Optional[int] = ..., truncated: _Optional[bool] = ...) -> None: ...

class WriteFileRequest(_message.Message):
    __slots__ = ("session_id", "path", "content", "append", "mode")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    APPEND_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    path: str
    content: bytes
    append: bool
    mode: int
    def __init__(self, session_id: _Optional[str] = ..., path: _Optional[str] = ..., content: _Optional[bytes] = ..., append: _Optional[bool] = ..., mode: _Optional[int] = ...) -> None: ...

class WriteFileResponse(_message.Message):
    __slots__ = ("file_size",)
    FILE_SIZE_FIELD_NUMBER: _ClassVar[int]
    file_size: int
    def __init__(self, file_size: _Optional[int] = ...) -> None: ...

class GetPoolStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetPoolStatsResponse(_message.Message):
    __slots__ = ("runtime", "executors_total", "executors_busy", "queued", "sessions_active", "sessions_max", "executions_by_status", "latency_p50_ms", "latency_p99_ms", "isolation_features")
    class ExecutionsByStatusEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    EXECUTORS_BUSY_FIELD_NUMBER: _ClassVar[int]
    QUEUED_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    SESSIONS_MAX_FIELD_NUMBER: _ClassVar[int]
    EXECUTIONS_BY_STATUS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P50_MS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_P99_MS_FIELD_NUMBER: _ClassVar[int]
    ISOLATION_FEATURES_FIELD_NUMBER: _ClassVar[int]
    runtime: SandboxRuntime
    executors_total: int
    executors_busy: int
    queued: int
    sessions_active: int
    sessions_max: int
    executions_by_status: _containers.ScalarMap[str, int]
    latency_p50_ms: float
    latency_p99_ms: float
    isolation_features: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, runtime: _Optional[_Union[SandboxRuntime, str]] = ..., executors_total: _Optional[int] = ..., executors_busy: _Optional[int] = ..., queued: _Optional[int] = ..., sessions_active: _Optional[int] = ..., sessions_max: _Optional[int] = ..., executions_by_status: _Optional[_Mapping[str, int]] = ..., latency_p50_ms: _Optional[float] = ..., latency_p99_ms: _Optional[float] = ..., isolation_features: _Optional[_Iterable[str]] = ...) -> None: ...
