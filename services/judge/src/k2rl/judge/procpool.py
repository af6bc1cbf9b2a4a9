"""A bounded pool of worker processes whose calls have hard timeouts.

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot stop one stuck task, and a
symbolic simplification of ``9^{9^{9^{9^9}}}`` never returns. Library timeouts do not help
either: math-verify's use ``signal.alarm``, which only works on the main thread (gRPC
handlers run on worker threads) and raises a ``BaseException`` subclass. Here each call
borrows one idle worker, sends the call over a pipe and waits at most ``timeout_s``; a
worker that overruns is killed (SIGKILL) and replaced lazily, so a pathological input costs
one worker restart and never blocks the other callers for longer than their own timeout.

Workers are fresh interpreters (``python -m k2rl.judge.procworker``) talking over pipes:
the parent is a multi-threaded gRPC server, so ``fork`` is unsafe, and multiprocessing's
``spawn`` re-imports the parent's ``__main__``, which breaks under unguarded entry points.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any


class WorkerTimeout(Exception):
    """The call ran past its timeout; its worker was killed."""


class PoolBusy(Exception):
    """No worker became free within the queueing limit; the call never started."""


class WorkerCrashed(Exception):
    """The worker died (or raised) while running the call."""


class PoolClosed(Exception):
    """The pool was closed before or during the call."""


def _qualified_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


@dataclass
class _Worker:
    process: subprocess.Popen[bytes]
    requests: Connection  # to the worker's stdin
    replies: Connection  # from the worker's stdout

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.requests.close()
        self.replies.close()


class KillingProcessPool:
    """At most ``size`` worker processes; each ``call`` has its own hard timeout.

    ``fn`` must be a module-level function (it is sent by name and imported in the worker);
    arguments and results must pickle. Thread-safe: up to ``size`` calls run at once, the
    rest wait for a worker up to ``queue_timeout_s``; a call's own timeout starts when it
    has a worker, so a burst of pathological inputs delays the others but never fails them.
    """

    def __init__(self, size: int, preload: tuple[str, ...] = (), startup_timeout_s: float = 60.0) -> None:
        if size < 1:
            raise ValueError("pool size must be >= 1")
        self.size = size
        self._preload = preload
        self._startup_timeout_s = startup_timeout_s
        # Slots: a started idle worker, or None meaning "start one when needed".
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(size):
            self._idle.put(None)
        self._lock = threading.Lock()
        self._workers: dict[int, _Worker] = {}
        self._closed = False
        self.kills = 0

    def _start_worker(self) -> _Worker:
        process = subprocess.Popen(
            [sys.executable, "-m", "k2rl.judge.procworker", *self._preload],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True,
        )
        assert process.stdin is not None and process.stdout is not None
        worker = _Worker(process, Connection(os.dup(process.stdin.fileno()), readable=False),
                         Connection(os.dup(process.stdout.fileno()), writable=False))
        process.stdin.close()
        process.stdout.close()
        # Start-up (interpreter and imports, seconds on a loaded box) is not charged to any
        # call's timeout: only a worker that announced itself ready takes calls.
        try:
            ready = worker.replies.poll(self._startup_timeout_s) and worker.replies.recv() == "ready"
        except (EOFError, OSError):
            ready = False
        if not ready:
            worker.kill()
            raise WorkerCrashed(f"worker did not start within {self._startup_timeout_s:.0f}s")
        with self._lock:
            self._workers[id(worker)] = worker
        return worker

    def _forget(self, worker: _Worker) -> None:
        with self._lock:
            self._workers.pop(id(worker), None)

    def warm_up(self) -> None:
        """Start every worker now instead of on first use (pays the import cost up front)."""
        slots = []
        while True:
            try:
                slots.append(self._idle.get_nowait())
            except queue.Empty:
                break
        for slot in slots:
            self._idle.put(slot if slot is not None else self._start_worker())

    def call(self, fn: Callable[..., Any], args: tuple[Any, ...], timeout_s: float,
             queue_timeout_s: float = 60.0) -> Any:
        """Run ``fn(*args)`` in a worker; raise WorkerTimeout / PoolBusy / WorkerCrashed / PoolClosed."""
        if self._closed:
            raise PoolClosed("process pool is closed")
        try:
            worker = self._idle.get(timeout=queue_timeout_s)
        except queue.Empty:
            raise PoolBusy(f"no worker free within {queue_timeout_s:.1f}s") from None
        try:
            if worker is not None and not worker.alive():
                self._forget(worker)
                worker.kill()
                worker = None
            if worker is None:
                worker = self._start_worker()
            deadline = time.monotonic() + timeout_s
            worker.requests.send((_qualified_name(fn), args))
            if not worker.replies.poll(max(0.0, deadline - time.monotonic())):
                self._forget(worker)
                worker.kill()
                self.kills += 1
                worker = None
                raise WorkerTimeout(f"call ran past {timeout_s:.1f}s; worker killed")
            ok, value = worker.replies.recv()
        except (EOFError, OSError, BrokenPipeError) as error:
            if worker is not None:
                self._forget(worker)
                worker.kill()
            worker = None
            raise WorkerCrashed(f"worker died: {type(error).__name__}") from None
        finally:
            if self._closed and worker is not None:
                self._forget(worker)
                worker.kill()
                worker = None
            self._idle.put(worker)
        if not ok:
            raise WorkerCrashed(value)
        return value

    def close(self) -> None:
        """Kill every worker; later calls raise PoolClosed."""
        self._closed = True
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.kill()
