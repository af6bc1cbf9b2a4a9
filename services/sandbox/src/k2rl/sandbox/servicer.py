"""gRPC glue: SandboxService messages to and from the domain types, nothing else."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from k2rl.common.v1 import common_pb2
from k2rl.core.errors import InvalidArgument
from k2rl.sandbox.isolation import SANDBOX_WORKDIR
from k2rl.sandbox.model import (
    ExecutionRequest,
    ExecutionResult,
    Language,
    Limits,
    OutputMatch,
    RunResult,
    TestCase,
    TestResult,
)
from k2rl.sandbox.pool import SandboxPool
from k2rl.sandbox.sessions import SessionStore
from k2rl.sandbox.v1 import sandbox_pb2 as pb
from k2rl.sandbox.v1 import sandbox_pb2_grpc

_LANGUAGES = {pb.LANGUAGE_PYTHON: Language.PYTHON, pb.LANGUAGE_BASH: Language.BASH, pb.LANGUAGE_CPP: Language.CPP}
_MATCHES = {pb.OUTPUT_MATCH_UNSPECIFIED: OutputMatch.TRIMMED_LINES, pb.OUTPUT_MATCH_EXACT: OutputMatch.EXACT,
            pb.OUTPUT_MATCH_TRIMMED_LINES: OutputMatch.TRIMMED_LINES, pb.OUTPUT_MATCH_TOKENS: OutputMatch.TOKENS}


def _status(name: str) -> int:
    return pb.ExecutionStatus.Value(f"EXECUTION_STATUS_{name}")


def limits_from_proto(message: pb.ResourceLimits) -> dict[str, int]:
    return {name: getattr(message, name) for name in Limits.names()}


def request_from_proto(message: pb.ExecuteRequest, prefix: str = "") -> ExecutionRequest:
    if message.language not in _LANGUAGES:
        raise InvalidArgument("set language to LANGUAGE_PYTHON, LANGUAGE_BASH or LANGUAGE_CPP",
                              field=f"{prefix}language")
    cases = []
    for index, case in enumerate(message.test_cases):
        if case.match not in _MATCHES:
            raise InvalidArgument(f"unknown output match {case.match}", field=f"{prefix}test_cases[{index}].match")
        which = case.WhichOneof("expectation")
        cases.append(TestCase(case.name or f"test-{index + 1}", case.stdin,
                              case.expected_stdout if which == "expected_stdout" else None,
                              case.test_file if which == "test_file" else None,
                              _MATCHES[case.match], case.float_tolerance))
    return ExecutionRequest(_LANGUAGES[message.language], message.code, limits_from_proto(message.limits),
                            tuple(message.command), message.stdin, dict(message.files), dict(message.env),
                            tuple(cases), message.stop_on_first_failure, message.session_id)


def run_to_proto(run: RunResult) -> pb.RunResult:
    return pb.RunResult(status=_status(run.status.name), exit_code=run.exit_code, signal=run.signal,
                        stdout=run.stdout, stderr=run.stderr, stdout_truncated=run.stdout_truncated,
                        stderr_truncated=run.stderr_truncated, wall_time_ms=run.wall_time_ms,
                        cpu_time_ms=run.cpu_time_ms, peak_memory_bytes=run.peak_memory_bytes)


def _test_to_proto(test: TestResult) -> pb.TestResult:
    message = pb.TestResult(name=test.name, passed=test.passed, skipped=test.skipped,
                            failure_message=test.failure_message)
    if test.run is not None:
        message.run.CopyFrom(run_to_proto(test.run))
    return message


def result_to_proto(result: ExecutionResult) -> pb.ExecuteResponse:
    message = pb.ExecuteResponse(status=_status(result.status.name), tests_passed=result.tests_passed,
                                 executor_id=result.executor_id,
                                 test_results=[_test_to_proto(t) for t in result.test_results])
    if result.run is not None:
        message.run.CopyFrom(run_to_proto(result.run))
    if result.compile is not None:
        message.compile.CopyFrom(run_to_proto(result.compile))
    if result.status.name == "SANDBOX_ERROR":
        message.error.CopyFrom(common_pb2.ErrorDetail(code="SANDBOX_ERROR", message=result.error, retryable=True,
                                                      hint="the program was not judged; retry the request"))
    return message


class SandboxServicer(sandbox_pb2_grpc.SandboxServiceServicer):
    def __init__(self, pool: SandboxPool, sessions: SessionStore, runtime_kind: int,
                 isolation_features: list[str], max_read_bytes: int) -> None:
        self.pool = pool
        self.sessions = sessions
        self.runtime_kind = runtime_kind
        self.isolation_features = isolation_features
        self.max_read_bytes = max_read_bytes

    def Execute(self, request: pb.ExecuteRequest, context: Any) -> pb.ExecuteResponse:
        return result_to_proto(self.pool.execute(request_from_proto(request)))

    def ExecuteBatch(self, request: pb.ExecuteBatchRequest, context: Any) -> pb.ExecuteBatchResponse:
        items = [request_from_proto(item, f"requests[{i}].") for i, item in enumerate(request.requests)]
        return pb.ExecuteBatchResponse(responses=[result_to_proto(r) for r in self.pool.execute_batch(items)])

    def CreateSession(self, request: pb.CreateSessionRequest, context: Any) -> pb.CreateSessionResponse:
        pool_limits = self.pool.limits
        limits = pool_limits.defaults.resolve(limits_from_proto(request.limits), pool_limits.ceilings, "limits")
        session = self.sessions.create(limits, dict(request.files), request.idle_timeout_ms, dict(request.labels),
                                       request.image)
        expire = Timestamp()
        expire.GetCurrentTime()
        expire.FromNanoseconds(expire.ToNanoseconds() + int(session.idle_timeout_s * 1e9))
        return pb.CreateSessionResponse(session_id=session.session_id, expire_time=expire,
                                        workdir=str(session.workdir.path) if session.runtime else SANDBOX_WORKDIR)

    def CloseSession(self, request: pb.CloseSessionRequest, context: Any) -> pb.CloseSessionResponse:
        closed = self.sessions.close(request.session_id)
        return pb.CloseSessionResponse(executions=closed.executions, cpu_time_ms=closed.cpu_time_ms)

    def ReadFile(self, request: pb.ReadFileRequest, context: Any) -> pb.ReadFileResponse:
        if request.max_bytes > self.max_read_bytes:
            raise InvalidArgument(f"at most {self.max_read_bytes} bytes per read", field="max_bytes")
        wanted = request.max_bytes or self.max_read_bytes
        content, size = self.sessions.read_file(request.session_id, request.path, request.offset, wanted)
        return pb.ReadFileResponse(content=content, file_size=size,
                                   truncated=request.offset + len(content) < size)

    def WriteFile(self, request: pb.WriteFileRequest, context: Any) -> pb.WriteFileResponse:
        size = self.sessions.write_file(request.session_id, request.path, request.content, request.append,
                                        request.mode)
        return pb.WriteFileResponse(file_size=size)

    def GetPoolStats(self, request: pb.GetPoolStatsRequest, context: Any) -> pb.GetPoolStatsResponse:
        stats = self.pool.stats()
        return pb.GetPoolStatsResponse(
            runtime=self.runtime_kind, executors_total=stats.executors_total, executors_busy=stats.executors_busy,
            queued=stats.queued, sessions_active=stats.sessions_active, sessions_max=stats.sessions_max,
            executions_by_status={f"EXECUTION_STATUS_{k}": v for k, v in stats.executions_by_status.items()},
            latency_p50_ms=stats.latency_p50_ms, latency_p99_ms=stats.latency_p99_ms,
            isolation_features=self.isolation_features)
