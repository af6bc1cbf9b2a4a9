"""Stateful sessions: a working directory that outlives single executions.

Sessions live in this replica's memory and on its disk; several replicas behind one address
need sticky routing by session id. A session idle for longer than its timeout is closed by
a reaper thread, killing anything still running in it, so crashed clients do not leak.

A session runs on the process runtime (a host directory, programs under bubblewrap) or, when
it asks for an image or the pool's sessions default to it, on the Kubernetes runtime (a Pod;
see pods.py). Either way ``Session.workdir`` holds its files and ``Session.runtime`` runs
its programs (None: the pool's process runtime).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k2rl.core.errors import InvalidArgument, NotFound, ResourceExhausted
from k2rl.sandbox.model import ExecutionResult, Limits
from k2rl.sandbox.pods import PodManager
from k2rl.sandbox.runtime import KillSwitch
from k2rl.sandbox.workdir import Workdir, check_relative

log = logging.getLogger(__name__)


@dataclass
class Session:
    session_id: str
    workdir: Any  # Workdir, or PodSandbox for the Kubernetes runtime
    limits: Limits
    idle_timeout_s: float
    labels: dict[str, str]
    last_used: float = field(default_factory=time.monotonic)
    executions: int = 0
    cpu_time_ms: float = 0.0
    kill_switch: KillSwitch = field(default_factory=KillSwitch)
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False
    runtime: Any = None  # None: the pool's process runtime; else a PodSandbox

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
                 file_owner: tuple[int, int] | None, reap_interval_s: float = 1.0,
                 pods: PodManager | None = None, sessions_on_pods: bool = False,
                 pod_gc_interval_s: float = 60.0) -> None:
        self.root = root
        self.max_sessions = max_sessions
        self.default_idle_timeout_s = default_idle_timeout_s
        self.max_idle_timeout_s = max_idle_timeout_s
        self.file_owner = file_owner
        self.pods = pods
        self.sessions_on_pods = sessions_on_pods
        self._sessions: dict[str, Session] = {}
        self._starting: set[str] = set()  # ids whose workdir (maybe a pod) is being created
        self._pod_gc_interval_s = pod_gc_interval_s
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
               labels: dict[str, str], image: str = "") -> Session:
        idle_s = idle_timeout_ms / 1000 if idle_timeout_ms else self.default_idle_timeout_s
        if idle_s > self.max_idle_timeout_s:
            raise InvalidArgument(f"{idle_timeout_ms} ms is above the maximum idle timeout "
                                  f"{self.max_idle_timeout_s * 1000:.0f} ms", field="idle_timeout_ms")
        paths = {path: check_relative(path, f"files[{path!r}]") for path in files}
        on_pods = bool(image) or self.sessions_on_pods
        if on_pods and self.pods is None:
            raise InvalidArgument("the process runtime runs the host's toolchain; images need the Kubernetes "
                                  "runtime (set K2RL_K8S_NAMESPACE)", field="image")
        session_id = uuid.uuid4().hex
        with self._lock:
            if len(self._sessions) + len(self._starting) >= self.max_sessions:
                raise ResourceExhausted(f"{self.max_sessions} sessions are open, the most this replica keeps; "
                                        "close idle ones or retry later")
            self._starting.add(session_id)
        try:
            if on_pods:
                assert self.pods is not None
                pod = self.pods.create(session_id, image, limits, labels)
                session = Session(session_id, pod, limits, idle_s, dict(labels), runtime=pod)
            else:
                session = Session(session_id, Workdir(self.root, f"session-{session_id[:8]}-"), limits, idle_s,
                                  dict(labels))
            with self._lock:
                self._sessions[session_id] = session
        finally:
            with self._lock:
                self._starting.discard(session_id)
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

    def live_session_ids(self) -> set[str]:
        """Open sessions and those being created (whose pods must not be collected)."""
        with self._lock:
            return set(self._sessions) | self._starting

    def collect_pods(self) -> list[str]:
        """Delete this instance's pods that no session owns (a failed delete, a lost create)."""
        return self.pods.collect_garbage(self.live_session_ids()) if self.pods is not None else []

    def _reap_loop(self, interval_s: float) -> None:
        next_collection = time.monotonic() + self._pod_gc_interval_s
        while not self._stop.wait(interval_s):
            self.expire_idle()
            if self.pods is not None and time.monotonic() >= next_collection:
                next_collection = time.monotonic() + self._pod_gc_interval_s
                try:
                    self.collect_pods()
                except Exception as error:  # noqa: BLE001 - the API may be away; retried next round
                    log.warning("collecting orphaned sandbox pods failed: %s", error)

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
