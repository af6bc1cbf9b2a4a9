"""The service as a process: contract, results, batches, back-pressure, stats, metrics, refusal."""

from __future__ import annotations

import threading
import urllib.request

import grpc
import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import assert_serves_contract, require_binary, serve_in_process
from k2rl.sandbox.service import SERVICE
from k2rl.sandbox.v1 import sandbox_pb2 as pb
from k2rl.sandbox.v1 import sandbox_pb2_grpc

S = pb.ExecutionStatus


def test_serves_health_and_reflection_for_its_contract(tmp_path) -> None:
    require_binary("bwrap", "bubblewrap")
    with serve_in_process(SERVICE, auth_token="t", work_root=str(_traversable(tmp_path))) as runtime:
        assert_serves_contract(runtime, "k2rl.sandbox.v1.SandboxService")


def _traversable(tmp_path):
    for directory in (tmp_path, *tmp_path.parents):
        if directory == directory.parent:
            break
        directory.chmod(directory.stat().st_mode | 0o111)
    return tmp_path


def test_python_bash_and_cpp_run_with_results_and_resource_figures(sandbox) -> None:
    python = sandbox.execute("import sys; print(sum(map(int, sys.stdin.read().split())))", stdin=b"1 2 3")
    assert (python.status, python.run.stdout, python.run.exit_code) == (S.EXECUTION_STATUS_OK, b"6\n", 0)
    assert python.run.cpu_time_ms > 0 and 1 << 20 < python.run.peak_memory_bytes < 256 << 20
    bash = sandbox.execute("echo \"$1-$K2RL_X\" >&2; exit 3", pb.LANGUAGE_BASH, env={"K2RL_X": "y"})
    assert (bash.status, bash.run.exit_code, bash.run.stderr) == (S.EXECUTION_STATUS_RUNTIME_ERROR, 3, b"-y\n")
    cpp = sandbox.execute("#include <cstdio>\nint main(){int a,b;scanf(\"%d %d\",&a,&b);printf(\"%d\\n\",a*b);}",
                          pb.LANGUAGE_CPP, stdin=b"6 7")
    assert (cpp.status, cpp.run.stdout, cpp.compile.status) == (S.EXECUTION_STATUS_OK, b"42\n", S.EXECUTION_STATUS_OK)
    broken = sandbox.execute("int main( {", pb.LANGUAGE_CPP)
    assert broken.status == S.EXECUTION_STATUS_COMPILE_ERROR and b"error" in broken.compile.stderr
    assert not broken.HasField("run")


def test_exit_codes_and_signals_are_told_apart(sandbox) -> None:
    exited = sandbox.execute("import sys; sys.exit(137)")
    killed = sandbox.execute("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)")
    assert (exited.run.exit_code, exited.run.signal) == (137, 0)
    assert (killed.status, killed.run.signal) == (S.EXECUTION_STATUS_RUNTIME_ERROR, 11)


def test_test_cases_report_per_test_results_and_stop_on_first_failure(sandbox) -> None:
    cases = [pb.TestCase(name="double", stdin=b"2", expected_stdout=b"4\n"),
             pb.TestCase(name="wrong", stdin=b"3", expected_stdout=b"7"),
             pb.TestCase(name="floats", stdin=b"0.1", expected_stdout=b"0.2000001", match=pb.OUTPUT_MATCH_TOKENS,
                         float_tolerance=1e-5),
             pb.TestCase(name="asserts", test_file="test_solution.py")]
    files = {"test_solution.py": b"from solution import double\nassert double(2) == 4\n"}
    code = ("def double(x):\n    return x * 2\n"
            "if __name__ == '__main__':\n    x = input()\n    print(double(float(x) if '.' in x else int(x)))\n")
    result = sandbox.execute(code, test_cases=cases, files=files)
    assert [(t.name, t.passed) for t in result.test_results] == [
        ("double", True), ("wrong", False), ("floats", True), ("asserts", True)]
    assert result.tests_passed == 3 and result.status == S.EXECUTION_STATUS_OK
    assert result.test_results[1].failure_message == "line 1: expected '7', got '6'"
    stopped = sandbox.execute(code, test_cases=cases, files=files, stop_on_first_failure=True)
    assert [t.skipped for t in stopped.test_results] == [False, False, True, True]


def test_batch_answers_in_order_and_rejects_a_bad_item_whole(sandbox) -> None:
    requests = [pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code=f"print({i})") for i in range(12)]
    response = sandbox.stub.ExecuteBatch(pb.ExecuteBatchRequest(requests=requests), timeout=60)
    assert [r.run.stdout for r in response.responses] == [f"{i}\n".encode() for i in range(12)]
    requests[3].limits.memory_bytes = 1 << 50
    with pytest.raises(grpc.RpcError) as error:
        sandbox.stub.ExecuteBatch(pb.ExecuteBatchRequest(requests=requests), timeout=60)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requests[3].limits.memory_bytes" in error.value.details()


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ExecuteRequest(code="print(1)"), "language"),
    (pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON), "code"),
    (pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="1", files={"../x": b""}), "files"),
    (pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="1", files={"/etc/x": b""}), "files"),
    (pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="1", limits=pb.ResourceLimits(wall_time_ms=10**9)),
     "limits.wall_time_ms"),
    (pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="1", session_id="nope"), "session_id"),
])
def test_bad_requests_get_a_clear_error_and_the_service_keeps_serving(sandbox, request_, field) -> None:
    with pytest.raises(grpc.RpcError) as error:
        sandbox.stub.Execute(request_, timeout=30)
    assert error.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert field in error.value.details()
    assert sandbox.execute("print('still here')").run.stdout == b"still here\n"


def test_stats_and_metrics_report_outcomes_and_isolation(sandbox) -> None:
    sandbox.execute("raise SystemExit(1)")
    stats = sandbox.stub.GetPoolStats(pb.GetPoolStatsRequest(), timeout=10)
    assert stats.runtime == pb.SANDBOX_RUNTIME_PROCESS and stats.executors_total == 4
    assert stats.executions_by_status["EXECUTION_STATUS_RUNTIME_ERROR"] >= 1
    assert 0 < stats.latency_p50_ms <= stats.latency_p99_ms
    assert {"user_namespace", "pid_namespace", "network_namespace", "read_only_root", "seccomp",
            "rlimits"} <= set(stats.isolation_features)
    with urllib.request.urlopen(sandbox.metrics_url, timeout=10) as response:
        text = response.read().decode()
    assert 'k2rl_sandbox_executions_total{language="python",status="runtime_error"}' in text
    assert "k2rl_sandbox_execution_seconds_bucket" in text and "k2rl_sandbox_queue_depth" in text


def test_a_full_pool_refuses_with_resource_exhausted(start_sandbox) -> None:
    require_binary("bwrap", "bubblewrap")
    server = start_sandbox(K2RL_CONCURRENCY="1", K2RL_MAX_QUEUE="1")
    server.wait_serving()
    stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, server.address, ClientOptions())
    slow = pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="import time; time.sleep(2)")
    outcomes: list[object] = []

    def call() -> None:
        try:
            outcomes.append(stub.Execute(slow, timeout=30).status)
        except grpc.RpcError as error:
            outcomes.append(error.code())

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(map(str, outcomes)) == sorted(map(str, [S.EXECUTION_STATUS_OK] * 2 +
                                                    [grpc.StatusCode.RESOURCE_EXHAUSTED] * 2))
    close_stub(stub)


def test_refuses_to_start_without_bubblewrap_unless_unsafe_dev_mode(start_sandbox) -> None:
    refused = start_sandbox(K2RL_BWRAP_PATH="/nonexistent/bwrap")
    assert refused.process.wait(timeout=60) != 0
    assert "bubblewrap isolation does not work here" in refused.log_text()
    unsafe = start_sandbox(K2RL_BWRAP_PATH="/nonexistent/bwrap", K2RL_UNSAFE_DEV_MODE="true")
    unsafe.wait_serving()
    assert "UNSAFE DEV MODE" in unsafe.log_text()
    stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, unsafe.address, ClientOptions())
    features = set(stub.GetPoolStats(pb.GetPoolStatsRequest(), timeout=10).isolation_features)
    assert "rlimits" in features and not features & {"user_namespace", "network_namespace", "seccomp"}
    close_stub(stub)
