"""Drives an ``Engine`` from a background thread and fans its updates out to request streams.

Every engine call goes through ``EngineRunner.call``, which runs it on the engine thread
between two ``step()`` calls: aborts, sleeps and weight swaps never overlap a forward. Streams are plain thread-safe queues: the gRPC servicer blocks on them from its
handler threads, the OpenAI API from worker threads of its event loop.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

from k2rl.core.errors import DeadlineExceeded, Unavailable
from k2rl.inference.engine import Engine, GenerationRequest
from k2rl.inference.metrics import PrometheusObserver
from k2rl.inference.sequence import SequenceUpdate

log = logging.getLogger(__name__)

T = TypeVar("T")

# Idle loop wake-up interval (also how often gauges are refreshed while idle).
_IDLE_WAIT_S = 0.5


class RequestStream:
    """Updates of one request until every sample has finished."""

    def __init__(self, request_id: str, num_samples: int, sink: Callable[[SequenceUpdate], None] | None = None) -> None:
        self.request_id = request_id
        self.num_samples = num_samples
        self._queue: queue.Queue[SequenceUpdate] = queue.Queue()
        self._unfinished = num_samples
        self._sink = sink
        self.finals_put = 0  # engine-thread side: samples whose last update was put

    def put(self, update: SequenceUpdate) -> None:
        """Called on the engine thread: to the sink if one was given (e.g. an asyncio
        bridge, which must not block), otherwise to the queue ``next`` reads."""
        if update.finish_reason is not None:
            self.finals_put += 1
        if self._sink is not None:
            self._sink(update)
        else:
            self._queue.put(update)

    def next(self, timeout: float | None = None) -> SequenceUpdate | None:
        """The next update, or None once every sample finished. Raises DeadlineExceeded on timeout."""
        if self._unfinished == 0:
            return None
        try:
            update = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise DeadlineExceeded(f"no output from request {self.request_id!r} within {timeout}s") from None
        if update.finish_reason is not None:
            self._unfinished -= 1
        return update

    def __iter__(self) -> Iterator[SequenceUpdate]:
        while (update := self.next()) is not None:
            yield update


class EngineRunner:
    """Owns the engine thread. Other threads never touch the engine directly: ``call`` and
    ``submit`` queue a closure that the loop runs between two steps and wait for its result,
    so a busy engine cannot starve an Abort (a plain lock gives no such guarantee)."""

    def __init__(self, engine: Engine, observer: PrometheusObserver | None = None) -> None:
        self.engine = engine
        self.observer = observer
        self._cond = threading.Condition()
        self._pending: deque[tuple[Callable[[Engine], object], Future[object]]] = deque()
        self._streams: dict[str, RequestStream] = {}
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name="inference-engine", daemon=True)

    def start(self) -> EngineRunner:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._thread.join(timeout_s)

    def post(self, fn: Callable[[Engine], T]) -> Future[T]:
        """Queue ``fn(engine)`` to run on the engine thread between steps; do not wait."""
        future: Future[T] = Future()
        with self._cond:
            if self._stopped:
                raise Unavailable("the inference engine is shutting down")
            self._pending.append((fn, future))  # type: ignore[arg-type]
            self._cond.notify_all()
        return future

    def call(self, fn: Callable[[Engine], T], timeout_s: float | None = None) -> T:
        """Run ``fn(engine)`` on the engine thread between steps and return its result."""
        return self.post(fn).result(timeout_s)

    def submit(
        self, request: GenerationRequest, sink: Callable[[SequenceUpdate], None] | None = None
    ) -> RequestStream:
        """Queue a request; its updates go to the returned stream (or to ``sink``)."""

        def add(engine: Engine) -> RequestStream:
            sequences = engine.add_request(request)
            stream = RequestStream(request.request_id, len(sequences), sink)
            self._streams[request.request_id] = stream
            return stream

        return self.call(add)

    def _deliver(self, updates: list[SequenceUpdate]) -> None:
        for update in updates:
            stream = self._streams.get(update.request_id)
            if stream is None:
                continue
            stream.put(update)
            if stream.finals_put == stream.num_samples:
                del self._streams[update.request_id]

    def _run_pending(self) -> None:
        while True:
            with self._cond:
                if not self._pending:
                    return
                fn, future = self._pending.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(self.engine))
            except BaseException as error:  # handed to the caller's thread
                future.set_exception(error)
            self._deliver(self.engine.drain_updates())

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not self._pending and not self.engine.has_work:
                    self._refresh_gauges()
                    self._cond.wait(_IDLE_WAIT_S)
                if self._stopped:
                    for _, future in self._pending:
                        future.set_exception(Unavailable("the inference engine is shutting down"))
                    return
            self._run_pending()
            if not self.engine.has_work:
                continue
            try:
                updates = self.engine.step()
            except Exception:  # keep serving: fail the running requests, not the replica
                log.exception("engine step failed; aborting running requests")
                self.engine.abort()
                updates = self.engine.drain_updates()
            self._deliver(updates)
            self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        if self.observer is not None:
            self.observer.refresh(self.engine.stats())
