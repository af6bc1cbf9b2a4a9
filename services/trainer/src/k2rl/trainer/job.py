"""A trainer job of N ranks, driven by rank 0.

Rank 0 (the one serving gRPC, or running ``k2rl train pretrain``) calls ``TrainerJob``
methods; each broadcasts a ``Command`` to the other ranks, which sit in ``follow()``, and
then every rank runs the same operation on its ``TrainingEngine``, meeting in the same
collectives. Operations are serialised by a lock: the engine does one thing at a time.

Input validation is deterministic and happens on every rank before any collective, so a
bad request fails on all ranks alike and the job stays in step.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from k2rl.core.errors import FailedPrecondition, ServiceError
from k2rl.models import parameter_counts
from k2rl.trainer import checkpointing
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.data import LMSequence, RLSample
from k2rl.trainer.distributed import DistContext, broadcast_object, gather_objects
from k2rl.trainer.engine import RLParams, TrainingEngine
from k2rl.trainer.metrics import StepMetrics
from k2rl.trainer.offload import Component, Placement
from k2rl.trainer.publish import RankIdentity, RankStager
from k2rl.trainer.weights_out import named_weights
from k2rl.weights import ChecksumAlgorithm, StagedVersion

log = logging.getLogger(__name__)


class Activity(enum.Enum):
    IDLE = "idle"
    TRAINING = "training"
    OFFLOADING = "offloading"
    ONLOADING = "onloading"
    SAVING = "saving"
    LOADING = "loading"
    PUBLISHING = "publishing"


@dataclass(frozen=True)
class RankReport:
    """Device and memory of one rank after the last operation."""

    rank: int
    node: str
    device: str
    allocated_bytes: int
    reserved_bytes: int
    total_bytes: int
    host_pinned_bytes: int


@dataclass(frozen=True)
class ComponentReport:
    component: Component
    placement: Placement
    bytes: int


@dataclass(frozen=True)
class JobState:
    step: int
    model: str
    parameter_count: int
    activity: Activity
    world_size: int
    components: tuple[ComponentReport, ...]
    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class MoveResult:
    bytes_moved: int
    duration_s: float
    ranks: tuple[RankReport, ...]


@dataclass(frozen=True)
class Command:
    op: str
    kwargs: dict[str, Any] = field(default_factory=dict)


STOP = "stop"


class TrainerJob:
    """The engine of this rank plus, on rank 0, the means to drive every other rank."""

    def __init__(self, engine: TrainingEngine, model_ref: str, startup_bytes_read: int = 0) -> None:
        self.engine = engine
        self.ctx: DistContext = engine.ctx
        self.model_ref = model_ref
        self.startup_bytes_read = startup_bytes_read
        self.activity = Activity.IDLE
        self._lock = threading.Lock()
        self._closed = False
        self._parameter_count = parameter_counts(engine.model.config).total
        self._stager = RankStager(self.ctx.rank)
        self.rank_reports: tuple[RankReport, ...] = (self._rank_report(),)

    # -- rank 0 API -----------------------------------------------------------------------

    def train_lm(self, sequences: Sequence[LMSequence], *, loss_kind: str = "pretrain",
                 expected_step: int | None = None) -> StepMetrics:
        return self._run("train_lm", Activity.TRAINING, expected_step,
                         sequences=list(sequences), loss_kind=loss_kind)

    def train_rl(self, samples: Sequence[RLSample], params: RLParams, ptx: Sequence[LMSequence] = (),
                 *, expected_step: int | None = None) -> StepMetrics:
        return self._run("train_rl", Activity.TRAINING, expected_step,
                         samples=list(samples), params=params, ptx=list(ptx))

    def eval_lm(self, sequences: Sequence[LMSequence]) -> float:
        return self._run("eval_lm", Activity.TRAINING, None, sequences=list(sequences))

    def offload(self, components: Sequence[Component] = tuple(Component)) -> MoveResult:
        return self._run("offload", Activity.OFFLOADING, None, components=list(components))

    def onload(self, components: Sequence[Component] = tuple(Component)) -> MoveResult:
        return self._run("onload", Activity.ONLOADING, None, components=list(components))

    def save(self, directory: Path, *, include_optimizer: bool = True, cursor: Any = None) -> checkpointing.SaveResult:
        return self._run("save", Activity.SAVING, None, directory=directory,
                         include_optimizer=include_optimizer, cursor=cursor)

    def load(self, path: Path, *, step: int | None = None, load_optimizer: bool = True) -> checkpointing.LoadResult:
        return self._run("load", Activity.LOADING, None, path=path, step=step, load_optimizer=load_optimizer)

    def stage_weights(self, bucket_bytes: int, algorithm: ChecksumAlgorithm) -> tuple[int, list[StagedVersion]]:
        """Every rank packs its share of the current weights into its staging buffer; returns
        the step the weights are from and the staged versions in rank order (see ``publish``)."""
        return self._run("stage_weights", Activity.PUBLISHING, None, bucket_bytes=bucket_bytes, algorithm=algorithm)

    def rank_identities(self) -> list[RankIdentity]:
        return [RankIdentity(r.rank, r.node, r.device) for r in self.rank_reports]

    def named_weights(self) -> Iterator[tuple[str, torch.Tensor]]:
        """This rank's full current weights in HF names (see ``weights_out``)."""
        return named_weights(self.engine)

    def state(self) -> JobState:
        """Cheap: no collectives; rank figures are those of the last operation."""
        offload = self.engine.offload
        return JobState(
            step=self.engine.step,
            model=self.model_ref,
            parameter_count=self._parameter_count,
            activity=self.activity,
            world_size=self.ctx.world_size,
            components=tuple(
                ComponentReport(c, offload.placement(c), offload.nbytes(c) * self.ctx.world_size) for c in Component
            ),
            ranks=self.rank_reports,
        )

    def close(self) -> None:
        """Release the other ranks from ``follow()`` (rank 0; idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._stager.close()
            try:
                broadcast_object(Command(STOP), self.ctx)
            except RuntimeError as error:  # a rank died first; there is nobody left to release
                log.warning("could not release the other ranks: %s", str(error).strip().splitlines()[0])

    # -- every rank -----------------------------------------------------------------------

    def follow(self) -> None:
        """Ranks > 0: run rank 0's commands until it says stop."""
        while True:
            command: Command = broadcast_object(None, self.ctx)
            if command.op == STOP:
                self._stager.close()
                return
            try:
                self._execute(command)
            except ServiceError as error:  # rank 0 hits the same error and reports it
                log.debug("rank %d: %s failed: %s", self.ctx.rank, command.op, error.message)

    def _run(self, op: str, activity: Activity, expected_step: int | None, **kwargs: Any) -> Any:
        with self._lock:
            if self._closed:
                raise FailedPrecondition("the trainer job is shutting down")
            if expected_step is not None and expected_step != self.engine.step:
                raise FailedPrecondition(
                    f"expected_step is {expected_step} but the trainer is at step {self.engine.step}; "
                    "a step that already ran is not applied twice"
                )
            self.activity = activity
            try:
                broadcast_object(Command(op, kwargs), self.ctx)
                return self._execute(Command(op, kwargs))
            finally:
                self.activity = Activity.IDLE

    def _execute(self, command: Command) -> Any:
        engine, kw = self.engine, command.kwargs
        try:
            if command.op == "train_lm":
                return engine.train_lm(kw["sequences"], loss_kind=kw["loss_kind"])
            if command.op == "train_rl":
                return engine.train_rl(kw["samples"], kw["params"], kw["ptx"])
            if command.op == "eval_lm":
                return engine.eval_lm(kw["sequences"])
            if command.op in ("offload", "onload"):
                start = time.perf_counter()
                move = engine.offload.offload if command.op == "offload" else engine.offload.onload
                moved = sum(gather_objects(move(kw["components"]), self.ctx))
                return MoveResult(moved, time.perf_counter() - start, self._gather_reports())
            if command.op == "stage_weights":
                with torch.no_grad():
                    staged = self._stager.stage(list(named_weights(engine)), self.ctx.world_size,
                                                kw["bucket_bytes"], kw["algorithm"])
                return engine.step, gather_objects(staged, self.ctx)
            if command.op == "save":
                return checkpointing.save_checkpoint(
                    engine, Path(kw["directory"]), include_optimizer=kw["include_optimizer"], cursor=kw["cursor"]
                )
            if command.op == "load":
                return checkpointing.load_checkpoint(
                    engine, Path(kw["path"]), step=kw["step"], load_optimizer=kw["load_optimizer"]
                )
            raise ValueError(f"unknown trainer command {command.op!r}")
        finally:
            if command.op not in ("offload", "onload"):
                self._gather_reports()

    def _gather_reports(self) -> tuple[RankReport, ...]:
        self.rank_reports = tuple(gather_objects(self._rank_report(), self.ctx))
        return self.rank_reports

    def _rank_report(self) -> RankReport:
        device = self.ctx.device
        if device.type == "cuda":
            allocated = torch.cuda.memory_allocated(device)
            reserved = torch.cuda.memory_reserved(device)
            total = torch.cuda.get_device_properties(device).total_memory
        else:
            allocated = reserved = total = 0
        return RankReport(self.ctx.rank, self.ctx.node, str(device), allocated, reserved, total,
                          self.engine.offload.host_pinned_bytes())


def build_job(model_ref: str, training: TrainingConfig, ctx: DistContext,
              resume_from: Path | None = None) -> TrainerJob:
    """The engine on this rank, from a preset or HF checkpoint read once (K2 §3.3.3)."""
    torch.manual_seed(training.seed)
    model, bytes_read = checkpointing.build_model_for_rank(model_ref, ctx, seed=training.seed)
    total_read = bytes_read
    if ctx.is_distributed:
        total_read = sum(gather_objects(bytes_read, ctx))
    engine = TrainingEngine(model, training, ctx)
    job = TrainerJob(engine, model_ref, total_read)
    if resume_from is not None:
        result = checkpointing.load_checkpoint(engine, resume_from, load_optimizer=True)
        job.startup_bytes_read += result.bytes_read
    job._gather_reports()
    if ctx.is_leader:
        log.info("trainer job ready: model %s, %d rank(s), step %d, startup read %d bytes (pid %d)",
                 model_ref, ctx.world_size, engine.step, job.startup_bytes_read, os.getpid())
    return job
