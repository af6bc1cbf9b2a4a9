"""Stateful sessions: a working directory that outlives single executions.

Sessions live in this replica's memory and on its disk; several replicas behind one address
need sticky routing by session id. A session idle for longer than its timeout is closed by
a reaper thread, killing anything still running in it, so crashed clients do not leak.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from k2rl.core.errors import InvalidArgument, NotFound, ResourceExhausted
from k2rl.sandbox.model import ExecutionResult, Limits
from k2rl.sandbox.runtime import KillSwitch
from k2rl.sandbox.workdir import Workdir, check_relative


@dataclass
class Session:
    session_id: str
    workdir: Workdir
    limits: Limits
    idle_timeout_s: float
    labels: dict[str, str]
    last_used: float = field(default_factory=time.monotonic)
    executions: int = 0
    cpu_time_ms: float = 0.0
    kill_switch: KillSwitch = field(default_factory=KillSwitch)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False

    @property
    def expires_at(self) -> float:
        return self.last_used + self.idle_timeout_s

    def record(self, result: ExecutionResult) -> None:
        runs = [result.run, result.compile, *(t.run for t in result.test_results)]
        self.executions += 1
        self.cpu_time_ms += sum(run.cpu_time_ms for run in runs if run is not None)


@dataclass(frozen=True)
class ClosedSession:
    executions: int
    cpu_time_ms: float


class SessionStore:
    """Open sessions of this replica, bounded by ``max_sessions``."""

    def __init__(self, root: Path, max_sessions: int, default_idle_timeout_s: float, max_idle_timeout_s: float,
                 file_owner: tuple[int, int] | None, reap_interval_s: float = 1.0) -> None:
        self.root = root
        self.max_sessions = max_sessions
        self.default_idle_timeout_s = default_idle_timeout_s
        self.max_idle_timeout_s = max_idle_timeout_s
        self.file_owner = file_owner
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._reaper = threading.Thread(target=self._reap_loop, args=(reap_interval_s,), name="sandbox-session-reaper",
                                        daemon=True)
        self._reaper.start()

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._sessions)

    def create(self, limits: Limits, files: dict[str, bytes], idle_timeout_ms: int,
               labels: dict[str, str]) -> Session:
        idle_s = idle_timeout_ms / 1000 if idle_timeout_ms else self.default_idle_timeout_s
        if idle_s > self.max_idle_timeout_s:
            raise InvalidArgument(f"{idle_timeout_ms} ms is above the maximum idle timeout "
                                  f"{self.max_idle_timeout_s * 1000:.0f} ms", field="idle_timeout_ms")
        paths = {path: check_relative(path, f"files[{path!r}]") for path in files}
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                raise ResourceExhausted(f"{self.max_sessions} sessions are open, the most this replica keeps; "
                                        "close idle ones or retry later")
            session_id = uuid.uuid4().hex
            session = Session(session_id, Workdir(self.root, f"session-{session_id[:8]}-"), limits, idle_s,
                              dict(labels))
            self._sessions[session_id] = session
        try:
            for path, relative in paths.items():
                session.workdir.write(relative, files[path], field=f"files[{path!r}]", owner=self.file_owner)
            if self.file_owner is not None:
                session.workdir.chown_tree(self.file_owner)
        except Exception:
            self.close(session_id)
            raise
        return session

    def get(self, session_id: str, field: str = "session_id") -> Session:
        with self._lock:
            session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no open session {session_id!r} (closed, expired or on another replica)", field=field)
        return session

    @contextmanager
    def checkout(self, session_id: str) -> Iterator[Session]:
        """Exclusive use of a session: one execution or file operation at a time."""
        session = self.get(session_id)
        with session.lock:
            if session.closed:
                raise NotFound(f"session {session_id!r} was closed", field="session_id")
            session.last_used = time.monotonic()
            try:
                yield session
            finally:
                session.last_used = time.monotonic()

    def read_file(self, session_id: str, path: str, offset: int, max_bytes: int) -> tuple[bytes, int]:
        relative = check_relative(path, "path")
        with self.checkout(session_id) as session:
            return session.workdir.read(relative, offset, max_bytes, field="path")

    def write_file(self, session_id: str, path: str, content: bytes, append: bool, mode: int) -> int:
        relative = check_relative(path, "path")
        if mode & ~0o777:
            raise InvalidArgument(f"mode {mode:#o} has bits beyond 0o777", field="mode")
        with self.checkout(session_id) as session:
            size = session.workdir.write(relative, content, field="path", append=append, mode=mode or 0o644,
                                         owner=self.file_owner)
            if self.file_owner is not None:
                session.workdir.chown_tree(self.file_owner)
            return size

    def close(self, session_id: str) -> ClosedSession:
        with self._lock:
            session = self._sessions.pop(session_id, None)
        if session is None:
            raise NotFound(f"no open session {session_id!r}", field="session_id")
        session.kill_switch.trip()  # stop a running program first, so the lock is released soon
        with session.lock:
            session.closed = True
            session.workdir.remove()
        return ClosedSession(session.executions, session.cpu_time_ms)

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Close sessions idle past their timeout; returns their ids."""
        now = time.monotonic() if now is None else now
        with self._lock:
            expired = [s.session_id for s in self._sessions.values()
                       if s.expires_at <= now and not s.lock.locked()]
        closed = []
        for session_id in expired:
            try:
                self.close(session_id)
                closed.append(session_id)
            except NotFound:
                pass
        return closed

    def _reap_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.expire_idle()

    def shutdown(self) -> None:
        self._stop.set()
        self._reaper.join(timeout=5)
        with self._lock:
            ids = list(self._sessions)
        for session_id in ids:
            try:
                self.close(session_id)
            except NotFound:
                pass
