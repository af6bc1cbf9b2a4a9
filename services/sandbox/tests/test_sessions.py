"""Stateful sessions over gRPC: files persist across runs, escapes are refused, idle ones expire."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.sandbox.v1 import sandbox_pb2 as pb
from k2rl.sandbox.v1 import sandbox_pb2_grpc

S = pb.ExecutionStatus


def test_a_session_keeps_its_files_across_commands_and_reads_back_safely(sandbox) -> None:
    stub = sandbox.stub
    created = stub.CreateSession(pb.CreateSessionRequest(files={"notes.txt": b"hello"}), timeout=10)
    assert created.workdir == "/workspace" and created.session_id
    sid = created.session_id
    stub.WriteFile(pb.WriteFileRequest(session_id=sid, path="bin/run.sh", content=b"cat notes.txt; echo ok > out",
                                       mode=0o755), timeout=10)
    first = stub.Execute(pb.ExecuteRequest(language=pb.LANGUAGE_BASH, command=["bash", "bin/run.sh"], session_id=sid),
                         timeout=30)
    assert (first.status, first.run.stdout) == (S.EXECUTION_STATUS_OK, b"hello")
    second = stub.Execute(pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="print(open('out').read().strip())",
                                            session_id=sid), timeout=30)
    assert second.run.stdout == b"ok\n"
    read = stub.ReadFile(pb.ReadFileRequest(session_id=sid, path="notes.txt", offset=1, max_bytes=2), timeout=10)
    assert (read.content, read.file_size, read.truncated) == (b"el", 5, True)
    # A program may leave a symlink to a host secret; the host-side read must not follow it.
    stub.Execute(pb.ExecuteRequest(language=pb.LANGUAGE_BASH, code="ln -s /etc/shadow leak; ln -s / root",
                                   session_id=sid), timeout=30)
    for path in ("leak", "root/etc/shadow", "../x"):
        with pytest.raises(grpc.RpcError) as error:
            stub.ReadFile(pb.ReadFileRequest(session_id=sid, path=path), timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, path
    with pytest.raises(grpc.RpcError) as error:
        stub.WriteFile(pb.WriteFileRequest(session_id=sid, path="root/tmp/pwned", content=b"x"), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    closed = stub.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=10)
    assert closed.executions == 3 and closed.cpu_time_ms > 0
    with pytest.raises(grpc.RpcError) as error:
        stub.ReadFile(pb.ReadFileRequest(session_id=sid, path="notes.txt"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_closing_a_session_kills_what_runs_in_it(sandbox) -> None:
    session_limits = pb.ResourceLimits(wall_time_ms=60_000)
    sid = sandbox.stub.CreateSession(pb.CreateSessionRequest(limits=session_limits), timeout=10).session_id
    request = pb.ExecuteRequest(language=pb.LANGUAGE_PYTHON, code="import time; time.sleep(30)", session_id=sid)
    with ThreadPoolExecutor(1) as caller:  # the typed stub's interceptors make .future() blocking
        running = caller.submit(sandbox.stub.Execute, request, timeout=60)
        time.sleep(1.0)
        started = time.monotonic()
        sandbox.stub.CloseSession(pb.CloseSessionRequest(session_id=sid), timeout=30)
        result = running.result(timeout=30)
    assert time.monotonic() - started < 10 and result.run.wall_time_ms < 10_000
    assert result.run.signal == 9 or result.status != S.EXECUTION_STATUS_OK


def test_idle_sessions_expire(start_sandbox) -> None:
    server = start_sandbox()
    server.wait_serving()
    stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, server.address, ClientOptions())
    sid = stub.CreateSession(pb.CreateSessionRequest(idle_timeout_ms=500), timeout=10).session_id
    assert stub.GetPoolStats(pb.GetPoolStatsRequest(), timeout=10).sessions_active == 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and stub.GetPoolStats(pb.GetPoolStatsRequest(), timeout=10).sessions_active:
        time.sleep(0.2)
    with pytest.raises(grpc.RpcError) as error:
        stub.ReadFile(pb.ReadFileRequest(session_id=sid, path="x"), timeout=10)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert not list(server.work_root.glob("session-*"))
    close_stub(stub)


def test_the_process_runtime_rejects_session_images(sandbox) -> None:
    with pytest.raises(grpc.RpcError) as error:
        sandbox.stub.CreateSession(pb.CreateSessionRequest(image="python:3.12"), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "image" in error.value.details()
