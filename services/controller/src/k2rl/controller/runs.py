"""Run lifecycle: start, resume, stop, observe. One run at a time owns trainer and replicas.

The run's thread drives ``IterationLoop``; everything it knows is in the state store, so
this class holds only the handle of the active run. A run left RUNNING by a controller
that died is resumed with ``start(resume=True)`` and continues from its last recorded
iteration (see ``scheduler/loop.py`` for why nothing is lost or trained twice).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.trace import Tracer

from k2rl.common.v1 import common_pb2
from k2rl.controller.rollout import RolloutProgress
from k2rl.controller.run_store import RunStore, check_run_id
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.scheduler.loop import IterationLoop, LoopOptions, StopRequested
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.core.errors import FailedPrecondition, InvalidArgument, NotFound
from k2rl.core.store import VersionConflict
from k2rl.models.tokenizer import Tokenizer

logger = logging.getLogger(__name__)
TERMINAL = {pb.RUN_STATE_STOPPED, pb.RUN_STATE_SUCCEEDED, pb.RUN_STATE_FAILED}


def validate_config(config: pb.RunConfig) -> None:
    """INVALID_ARGUMENT naming the field, for what no service would catch first."""
    if not config.model_preset:
        raise InvalidArgument("set the model preset, e.g. k2-nano", field="config.model_preset")
    if not config.environments:
        raise InvalidArgument("add at least one environment", field="config.environments")
    names = [e.name for e in config.environments]
    if len(set(names)) != len(names):
        raise InvalidArgument("environment names must be unique", field="config.environments")
    if config.rl_loss.tau <= 0:
        raise InvalidArgument("the K1.5 regularization tau must be > 0", field="config.rl_loss.tau")
    if config.prompts_per_iteration == 0:
        raise InvalidArgument("must be at least 1", field="config.prompts_per_iteration")


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class RunObserver:
    """Hooks for metrics: a phase ended, an iteration was recorded. Default: nothing."""

    def phase_finished(self, phase: int, seconds: float) -> None:
        """``phase`` (an IterationPhase) took ``seconds``."""

    def iteration_finished(self, record: pb.IterationRecord, run: pb.Run) -> None:
        """``record`` was committed; ``run`` is the run record right after it."""


@dataclass
class _Active:
    run_id: str
    loop: IterationLoop
    thread: threading.Thread


class RunManager:
    """Owns the active run's thread; everything else is read from the store."""

    def __init__(self, store: RunStore, connect: Callable[[], ServiceClients],
                 tokenizer_for: Callable[[str], Tokenizer], context_length: int = 512,
                 colocated: bool = True, observer: RunObserver | None = None, overlap_rollout: bool = False,
                 tracer: Tracer | None = None) -> None:
        self.store = store
        self._connect = connect
        self._tokenizer_for = tokenizer_for
        self._context_length = context_length
        self._colocated = colocated
        self._overlap_rollout = overlap_rollout
        self._observer = observer or RunObserver()
        self._tracer = tracer or trace.NoOpTracer()
        self._lock = threading.Lock()
        self._active: _Active | None = None

    # --- RPC-facing operations ---

    def start(self, config: pb.RunConfig, run_id: str, resume: bool) -> pb.Run:
        with self._lock:
            if self._active is not None and self._active.thread.is_alive():
                raise FailedPrecondition(f"run {self._active.run_id} is active; stop it first")
            if resume:
                run = self._resumable(run_id)
            else:
                validate_config(config)
                run_id = run_id or f"run-{uuid.uuid4().hex[:10]}"
                try:
                    check_run_id(run_id)
                except ValueError as error:
                    raise InvalidArgument(str(error), field="run_id") from None
                run = pb.Run(run_id=run_id, state=pb.RUN_STATE_PENDING, config=config, create_time=_now())
                try:
                    self.store.create_run(run)
                except VersionConflict:
                    raise FailedPrecondition(f"run {run_id} exists; pass resume=true to continue it") from None
            try:
                loop = self._new_loop(run)
            except ValueError as error:
                raise InvalidArgument(str(error), field="config.environments") from None
            previous = run.state
            run = self._update(run.run_id, state=pb.RUN_STATE_RUNNING, start_time=_now(), clear_end=True)
            self._event(run.run_id, run.completed_iterations,
                        state_changed=pb.RunStateChanged(previous_state=previous, state=pb.RUN_STATE_RUNNING,
                                                         reason="resumed" if resume else "started"))
            thread = threading.Thread(target=self._drive, args=(loop,), name=f"run-{run.run_id}", daemon=True)
            self._active = _Active(run.run_id, loop, thread)
            thread.start()
            return run

    def get(self, run_id: str) -> pb.Run:
        found = self.store.get_run(run_id)
        if found is None:
            raise NotFound(f"no run {run_id!r}")
        return found[0]

    def stop(self, run_id: str, mode: int, reason: str) -> pb.Run:
        run = self.get(run_id)
        with self._lock:
            active = self._active if self._active and self._active.run_id == run_id else None
        if active is None or not active.thread.is_alive():
            if run.state in TERMINAL:
                return run
            return self._transition(run_id, pb.RUN_STATE_STOPPED, reason or "stopped while not iterating")
        active.loop.request_stop(immediate=mode == pb.STOP_MODE_IMMEDIATE)
        return self._transition(run_id, pb.RUN_STATE_STOPPING, reason or "StopRun")

    def wait(self, run_id: str, timeout_s: float) -> pb.Run:
        """Block until the run's thread ends (tests, the CLI); returns the run record."""
        with self._lock:
            active = self._active
        if active is not None and active.run_id == run_id:
            active.thread.join(timeout_s)
        return self.get(run_id)

    def watch(self, run_id: str, after_sequence: int | None, is_active: Callable[[], bool],
              poll_s: float = 0.2) -> Iterator[pb.WatchRunResponse]:
        """Events after ``after_sequence`` (None: from now), until the run is terminal."""
        self.get(run_id)
        sequence = self.store.event_count(run_id) if after_sequence is None else after_sequence
        while is_active():
            events = self.store.events(run_id, sequence)
            yield from events
            if events:
                sequence = events[-1].sequence
                continue
            if self.get(run_id).state in TERMINAL and not self.store.events(run_id, sequence):
                return
            time.sleep(poll_s)

    # --- the run thread ---

    def _new_loop(self, run: pb.Run) -> IterationLoop:
        options = LoopOptions(colocated=self._colocated, overlap_rollout=self._overlap_rollout,
                              context_length=self._context_length,
                              on_phase=lambda it, phase, ms: self._on_phase(run.run_id, it, phase, ms),
                              on_progress=lambda it, p: self._on_progress(run.run_id, it, p),
                              tracer=self._tracer)
        return IterationLoop(run.run_id, run.config, self.store, self._connect(),
                             self._tokenizer_for(run.config.model_preset), options)

    def _drive(self, loop: IterationLoop) -> None:
        run_id = loop.run_id
        try:
            while not loop.done():
                if loop.stop_after_iteration.is_set():
                    loop.close()  # a rollout running ahead (overlap) is paused into the buffer first
                    self._transition(run_id, pb.RUN_STATE_STOPPED, "StopRun")
                    return
                record = loop.run_iteration()
                self._observer.iteration_finished(record, self.get(run_id))
            self._transition(run_id, pb.RUN_STATE_SUCCEEDED, "completed all iterations")
        except StopRequested:
            loop.close()
            self._transition(run_id, pb.RUN_STATE_STOPPED, "StopRun (immediate)")
        except Exception as error:  # noqa: BLE001 - the run fails with the reason recorded, the service lives
            loop.close()
            logger.exception("run %s failed", run_id)
            detail = common_pb2.ErrorDetail(code=type(error).__name__, message=str(error)[:2000],
                                            hint="fix the cause, then StartRun(resume=true)", retryable=True)
            run = self.get(run_id)
            self._event(run_id, run.current_iteration, error=pb.RunError(error=detail, phase=run.current_phase))
            self._transition(run_id, pb.RUN_STATE_FAILED, detail.message, error=detail)

    def _on_phase(self, run_id: str, iteration: int, phase: int, duration_ms: float | None) -> None:
        if duration_ms is None:
            self._update(run_id, current_phase=phase, current_iteration=iteration)
            self._event(run_id, iteration, phase_started=pb.PhaseStarted(phase=phase))
        else:
            self._observer.phase_finished(phase, duration_ms / 1e3)
            self._event(run_id, iteration, phase_finished=pb.PhaseFinished(phase=phase, duration_ms=duration_ms))

    def _on_progress(self, run_id: str, iteration: int, progress: RolloutProgress) -> None:
        budget = self.get(run_id).config.partial_rollout.iteration_token_budget
        self._event(run_id, iteration, rollout_progress=pb.RolloutProgress(
            trajectories_finished=progress.finished, trajectories_target=progress.target,
            trajectories_running=progress.running, generated_tokens=progress.generated_tokens,
            iteration_token_budget=budget))

    # --- records ---

    def _resumable(self, run_id: str) -> pb.Run:
        if not run_id:
            raise InvalidArgument("resuming needs the run_id", field="run_id")
        run = self.get(run_id)
        if run.state == pb.RUN_STATE_SUCCEEDED:
            raise FailedPrecondition(f"run {run_id} already completed all its iterations")
        return run

    def _transition(self, run_id: str, state: int, reason: str,
                    error: common_pb2.ErrorDetail | None = None) -> pb.Run:
        previous = self.get(run_id).state
        end = _now() if state in TERMINAL else None
        run = self._update(run_id, state=state, end_time=end, error=error)
        self._event(run_id, run.current_iteration,
                    state_changed=pb.RunStateChanged(previous_state=previous, state=state, reason=reason))
        return run

    def _update(self, run_id: str, clear_end: bool = False, **fields: object) -> pb.Run:
        """Read-modify-write of the run record, retried on concurrent writes."""
        while True:
            run, version = self.store.get_run(run_id) or (None, 0)
            if run is None:
                raise NotFound(f"no run {run_id!r}")
            for name, value in fields.items():
                if value is None:
                    continue
                if isinstance(value, Timestamp | common_pb2.ErrorDetail):
                    getattr(run, name).CopyFrom(value)
                else:
                    setattr(run, name, value)
            if clear_end:
                run.ClearField("end_time")
                run.ClearField("error")
            try:
                self.store.put_run(run, version)
                return run
            except VersionConflict:
                continue

    def _event(self, run_id: str, iteration: int, **event: object) -> None:
        self.store.append_event(run_id, pb.WatchRunResponse(event_time=_now(), iteration=iteration, **event))
