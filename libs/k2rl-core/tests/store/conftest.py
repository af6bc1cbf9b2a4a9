"""Fixtures that run every store test against both backends: a SQLite file and a real
redis-server on a free loopback port (started here, killed at the end)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from k2rl.core.store import StateStore, open_store
from k2rl.core.testing import free_loopback_port, require_binary

BACKENDS = ["sqlite", pytest.param("redis", marks=pytest.mark.needs_system)]
WORKER = Path(__file__).with_name("store_worker.py")


@dataclass
class RedisServer:
    """One redis-server process; ``kill()`` then ``start()`` is a crash and restart that keeps
    the port and the data directory (so the AOF, when enabled, is replayed)."""

    directory: Path
    appendfsync: str | None = None  # None: no AOF; "always" / "everysec": AOF on
    port: int = field(default_factory=free_loopback_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def socket_path(self) -> Path:
        return self.directory / "redis.sock"

    def start(self, timeout_s: float = 10.0) -> None:
        aof = ["--appendonly", "no"]
        if self.appendfsync:
            aof = ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        self.process = subprocess.Popen(
            [
                require_binary("redis-server", "redis-server"),
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--unixsocket", str(self.socket_path),
                "--dir", str(self.directory),
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
                *aof,
            ],
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, socket_timeout=1.0)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:  # not listening yet, or still loading its AOF
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    pytest.fail(f"redis-server did not answer PING on port {self.port}:\n{log}")
                time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save; only what reached the AOF survives."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def started_redis(directory: Path, appendfsync: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(directory, appendfsync)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class StoreTarget:
    """Where a test's store lives: a URL and a namespace, so child processes can open it too."""

    url: str
    namespace: str
    redis_server: RedisServer | None = None

    def open(self) -> StateStore:
        return open_store(self.url, namespace=self.namespace)


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One volatile server for the contract tests; each test gets its own namespace on it."""
    yield from started_redis(tmp_path_factory.mktemp("redis"))


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    namespace = f"test-{uuid.uuid4().hex[:12]}"
    if request.param == "sqlite":
        return StoreTarget(f"sqlite:///{tmp_path / 'state.db'}", namespace)
    server = request.getfixturevalue("shared_redis")
    return StoreTarget(server.url, namespace, server)


@pytest.fixture(params=BACKENDS)
def durable_target(request: pytest.FixtureRequest, tmp_path: Path) -> StoreTarget:
    """Like ``target``, but Redis is a server of the test's own with ``appendfsync always``."""
    if request.param == "sqlite":
        return StoreTarget(f"sqlite:///{tmp_path / 'state.db'}", "crash")
    server = request.getfixturevalue("private_redis")
    return StoreTarget(server.url, "crash", server)


@pytest.fixture
def store(target: StoreTarget) -> Iterator[StateStore]:
    with target.open() as opened:
        yield opened


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of the test's own with ``appendfsync always``, for tests that kill it."""
    yield from started_redis(tmp_path, appendfsync="always")


@pytest.fixture
def spawn_worker() -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``store_worker.py ARGS...`` in a fresh interpreter that imports k2rl as this one
    does; its stdin and stdout are text pipes. Children still running at teardown are killed."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    children: list[subprocess.Popen[str]] = []

    def spawn(*args: str) -> subprocess.Popen[str]:
        child = subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        children.append(child)
        return child

    yield spawn
    for child in children:
        if child.poll() is None:
            child.kill()
        child.communicate(timeout=10)  # also closes the pipes
