"""The sandbox service as a real process on loopback, shared by the tests of a session."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.health import wait_until_serving
from k2rl.core.testing import free_loopback_port, require_binary
from k2rl.sandbox.v1 import sandbox_pb2 as pb
from k2rl.sandbox.v1 import sandbox_pb2_grpc


@dataclass
class SandboxProcess:
    """``python -m k2rl.sandbox`` started with extra ``K2RL_*`` environment."""

    process: subprocess.Popen[bytes]
    address: str
    metrics_port: int
    log: Path
    work_root: Path

    @classmethod
    def start(cls, log_dir: Path, **env: str) -> SandboxProcess:
        port, metrics_port = free_loopback_port(), free_loopback_port()
        # Not under pytest's 0700 tmp: the sandbox uid must reach its working directories.
        work_root = Path(tempfile.mkdtemp(prefix="k2rl-sandbox-test-"))
        work_root.chmod(0o711)
        log = log_dir / f"sandbox-{port}.log"
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "k2rl.sandbox", "--port", str(port), "--metrics-port", str(metrics_port)],
                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "K2RL_WORK_ROOT": str(work_root), **env},
                start_new_session=True)
        return cls(process, f"127.0.0.1:{port}", metrics_port, log, work_root)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def wait_serving(self, timeout_s: int = 60) -> None:
        for _ in range(timeout_s):
            if self.process.poll() is not None:
                raise AssertionError(f"sandbox exited with {self.process.returncode}:\n{self.log_text()}")
            if wait_until_serving("sandbox", self.address, 1.0, ClientOptions()).serving:
                return
        raise AssertionError(f"sandbox not serving after {timeout_s}s:\n{self.log_text()}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        shutil.rmtree(self.work_root, ignore_errors=True)


@dataclass
class RunningSandbox:
    server: SandboxProcess
    http_url: str
    stub: sandbox_pb2_grpc.SandboxServiceStub

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.server.metrics_port}/metrics"

    def execute(self, code: str, language: int = pb.LANGUAGE_PYTHON, **fields: object) -> pb.ExecuteResponse:
        return self.stub.Execute(pb.ExecuteRequest(language=language, code=code, **fields), timeout=60)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSandbox]:
    require_binary("bwrap", "bubblewrap")
    http_port = free_loopback_port()
    server = SandboxProcess.start(tmp_path_factory.mktemp("sandbox"), K2RL_CONCURRENCY="4", K2RL_MAX_QUEUE="64",
                                  K2RL_HTTP_PORT=str(http_port))
    try:
        server.wait_serving()
        stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, server.address, ClientOptions())
        yield RunningSandbox(server, f"http://127.0.0.1:{http_port}", stub)
        close_stub(stub)
    finally:
        server.stop()


@pytest.fixture
def start_sandbox(tmp_path: Path) -> Iterator[object]:
    """Factory: ``start_sandbox(K2RL_X="...")`` -> a started (not yet serving) SandboxProcess."""
    started: list[SandboxProcess] = []

    def start(**env: str) -> SandboxProcess:
        server = SandboxProcess.start(tmp_path, **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
