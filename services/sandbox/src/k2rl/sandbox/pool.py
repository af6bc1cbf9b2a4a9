"""The executor pool: bounded admission, a fixed number of concurrent sandboxes, stats.

Admission is all-or-nothing per call: an Execute takes one slot, an ExecuteBatch takes one
per item, and when the queue cannot hold them the call fails at once with
RESOURCE_EXHAUSTED (back-pressure) instead of piling up behind a stalled pool.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from k2rl.core.errors import InvalidArgument, ResourceExhausted
from k2rl.core.metrics import ServiceMetrics
from k2rl.sandbox.model import ExecutionRequest, ExecutionResult, Limits, Status
from k2rl.sandbox.programs import Executor, validate
from k2rl.sandbox.runtime import KillSwitch
from k2rl.sandbox.sessions import SessionStore
from k2rl.sandbox.workdir import Workdir

# Per-language execution latency, from trivial scripts (tens of ms) to long test suites.
EXECUTION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_LATENCY_WINDOW = 2048


@dataclass(frozen=True)
class PoolLimits:
    concurrency: int
    max_queue: int
    defaults: Limits
    ceilings: Limits


@dataclass(frozen=True)
class PoolStats:
    executors_total: int
    executors_busy: int
    queued: int
    sessions_active: int
    sessions_max: int
    executions_by_status: dict[str, int]
    latency_p50_ms: float
    latency_p99_ms: float


class _PoolMetrics:
    def __init__(self, metrics: ServiceMetrics) -> None:
        self.queue_depth = metrics.gauge("k2rl_sandbox_queue_depth", "Executions waiting for an executor.")
        self.in_flight = metrics.gauge("k2rl_sandbox_in_flight", "Executions running now.")
        self.latency = metrics.histogram("k2rl_sandbox_execution_seconds",
                                         "Execution latency including queueing, by language.",
                                         ("language",), EXECUTION_BUCKETS)
        self.outcomes = metrics.counter("k2rl_sandbox_executions_total", "Executions by language and status.",
                                        ("language", "status"))
        self.rejected = metrics.counter("k2rl_sandbox_rejected_total",
                                        "Executions refused because the queue was full.")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


class SandboxPool:
    """Runs ExecutionRequests on ``concurrency`` worker threads, each driving one sandbox."""

    def __init__(self, executor: Executor, limits: PoolLimits, sessions: SessionStore, work_root: Path,
                 metrics: ServiceMetrics) -> None:
        self.executor = executor
        self.limits = limits
        self.sessions = sessions
        self.work_root = work_root
        self._metrics = _PoolMetrics(metrics)
        self._workers = ThreadPoolExecutor(limits.concurrency, thread_name_prefix="sandbox-exec")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._by_status: Counter[str] = Counter()
        self._latencies: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._shutdown = KillSwitch()

    @property
    def capacity(self) -> int:
        return self.limits.concurrency + self.limits.max_queue

    def execute(self, request: ExecutionRequest) -> ExecutionResult:
        return self.execute_batch([request], prefix_of=lambda _: "")[0]

    def execute_batch(self, requests: Sequence[ExecutionRequest],
                      prefix_of: Callable[[int], str] = lambda i: f"requests[{i}].") -> list[ExecutionResult]:
        """Validate every item, admit all or none, run them, return results in order."""
        if len(requests) > self.capacity:
            raise InvalidArgument(f"{len(requests)} programs exceed the pool's capacity of {self.capacity} "
                                  "(concurrency + queue); split the batch", field="requests")
        resolved = [self._resolve(r, prefix_of(i)) for i, r in enumerate(requests)]
        self._admit(len(requests))
        submitted_at = time.monotonic()
        futures: list[Future[ExecutionResult]] = []
        try:
            for request, limits in zip(requests, resolved, strict=True):
                futures.append(self._workers.submit(self._run, request, limits, submitted_at))
        except RuntimeError:  # executor shut down between admission and submission
            self._release(len(requests) - len(futures))
            raise
        return [future.result() for future in futures]

    def _resolve(self, request: ExecutionRequest, prefix: str) -> Limits:
        validate(request, prefix.rstrip("."))
        field = f"{prefix}limits"
        if request.session_id:
            session = self.sessions.get(request.session_id, field=f"{prefix}session_id")
            return session.limits.resolve(request.requested_limits, session.limits, field)
        return self.limits.defaults.resolve(request.requested_limits, self.limits.ceilings, field)

    def _admit(self, count: int) -> None:
        with self._lock:
            free = self.capacity - self._admitted
            if count > free:
                self._metrics.rejected.inc(count)
                raise ResourceExhausted(
                    f"sandbox pool is full ({self._admitted} executions admitted, capacity {self.capacity}); "
                    "retry with backoff")
            self._admitted += count
            self._publish_locked()

    def _release(self, count: int) -> None:
        with self._lock:
            self._admitted -= count
            self._publish_locked()

    def _publish_locked(self) -> None:
        self._metrics.in_flight.set(self._running)
        self._metrics.queue_depth.set(self._admitted - self._running)

    def _run(self, request: ExecutionRequest, limits: Limits, submitted_at: float) -> ExecutionResult:
        executor_id = threading.current_thread().name
        with self._lock:
            self._running += 1
            self._publish_locked()
        try:
            result = self._run_in_workdir(request, limits)
        except Exception as error:  # noqa: BLE001 - a failed sandbox is a result, never a lost request
            result = ExecutionResult(Status.SANDBOX_ERROR, error=f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                self._running -= 1
                self._admitted -= 1
                self._publish_locked()
        elapsed = time.monotonic() - submitted_at
        language = request.language.name.lower()
        with self._lock:
            self._by_status[result.status.name] += 1
            self._latencies.append(elapsed * 1000)
        self._metrics.latency.labels(language).observe(elapsed)
        self._metrics.outcomes.labels(language, result.status.value).inc()
        return replace(result, executor_id=executor_id)

    def _run_in_workdir(self, request: ExecutionRequest, limits: Limits) -> ExecutionResult:
        if request.session_id:
            with self.sessions.checkout(request.session_id) as session:
                result = self.executor.execute(request, limits, session.workdir, session.kill_switch,
                                               runtime=session.runtime)
                session.record(result)
                return result
        workdir = Workdir(self.work_root, f"run-{uuid.uuid4().hex[:8]}-")
        try:
            return self.executor.execute(request, limits, workdir, self._shutdown)
        finally:
            workdir.remove()

    def stats(self) -> PoolStats:
        with self._lock:
            latencies = list(self._latencies)
            by_status = dict(self._by_status)
            busy, queued = self._running, self._admitted - self._running
        return PoolStats(self.limits.concurrency, busy, queued, self.sessions.active, self.sessions.max_sessions,
                         by_status, percentile(latencies, 50), percentile(latencies, 99))

    def close(self) -> None:
        """Kill whatever runs and stop the workers (service shutdown)."""
        self._shutdown.trip()
        self._workers.shutdown(wait=True, cancel_futures=True)
