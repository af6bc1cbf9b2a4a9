"""The colocated RL iteration (K2 section 3.3.1, DESIGN.md section 3), over the services' gRPC APIs.

    WakeUp -> rollout (resumed partial rollouts first; scoring overlaps) -> Sleep
    -> Onload -> TrainStep(s) -> Offload -> PublishWeights -> WaitForVersion -> record

Crash safety. Everything a restart needs is in the state store before it is relied on:
new groups and the advanced dataset cursor in one commit; each sample as soon as it is
paused or finished; the train batch (group keys and the trainer step it starts from)
before the first TrainStep. A restarted loop therefore redoes at most the interrupted
phase: an unrecorded rollout continues from the buffer, an unrecorded training phase
retrains the *same* batch, and TrainStep's expected_step skips steps the trainer already
applied (the iteration record still lists them, without figures: see applied_before_restart). The iteration is recorded by one atomic commit (``RunStore.commit_iteration``).
Disaggregated mode (``colocated=False``) skips Sleep/WakeUp and Onload/Offload.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Tracer

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce_pb2
from k2rl.common.v1 import common_pb2
from k2rl.controller.environments import EnvironmentServices, EnvironmentSetup, build_environment
from k2rl.controller.rollout import RolloutLimits, RolloutManager, RolloutOutcome, RolloutProgress
from k2rl.controller.run_store import RunStore, TrainBatch
from k2rl.controller.scheduler.batching import (
    draw_groups,
    enforce_staleness,
    split_stale,
    split_steps,
)
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.scheduler.schedules import is_set, temperature_at
from k2rl.controller.trajectories import PromptGroup, Sample, SampleStatus
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.core.store import VersionConflict
from k2rl.inference.v1 import inference_pb2
from k2rl.judge.v1 import judge_pb2
from k2rl.models.tokenizer import Tokenizer
from k2rl.trainer.v1 import trainer_pb2

logger = logging.getLogger(__name__)
Phase = pb.IterationPhase


def applied_before_restart(expected_step: int) -> trainer_pb2.TrainStepMetrics:
    """The record of an RL step the trainer applied before the controller crashed: its step
    number only, since its figures died with the interrupted TrainStep call
    (``trained_tokens`` 0 marks it)."""
    return trainer_pb2.TrainStepMetrics(step=expected_step + 1, loss_kind=trainer_pb2.LOSS_KIND_RL_K15)


class StopRequested(Exception):
    """StopRun(IMMEDIATE) interrupted the iteration; nothing of it was recorded."""


class WeightUpdateFailed(RuntimeError):
    """The checkpoint engine reported the version FAILED."""


@dataclass
class LoopOptions:
    colocated: bool = True
    # Disaggregated mode only: roll out iteration n+1 while iteration n trains and updates
    # weights (bounded staleness: PartialRolloutConfig.max_version_lag).
    overlap_rollout: bool = False
    context_length: int = 512
    rpc_timeout_s: float = 600.0
    weight_update_timeout_s: float = 300.0
    on_phase: Callable[[int, int, float | None], None] = lambda iteration, phase, duration_ms: None
    on_progress: Callable[[int, RolloutProgress], None] = lambda iteration, progress: None
    # One trace per iteration: a root span, a child per phase, the phases' RPCs below them.
    tracer: Tracer = field(default_factory=trace.NoOpTracer)


@dataclass
class _Timings:
    phases: list[pb.PhaseTiming] = field(default_factory=list)


@dataclass
class _Rollout:
    """A finished rollout phase whose train batch is not fixed yet."""

    iteration: int
    groups: list[PromptGroup]
    weight_version: int
    stats: dict[str, float]
    timings: _Timings


class IterationLoop:
    """Runs one run's iterations until its config says done or a stop is requested."""

    def __init__(self, run_id: str, config: pb.RunConfig, store: RunStore, clients: ServiceClients,
                 tokenizer: Tokenizer, options: LoopOptions) -> None:
        self.run_id = run_id
        self.config = config
        self.store = store
        self.clients = clients
        self.tokenizer = tokenizer
        self.options = options
        services = EnvironmentServices(judge=clients.judge, sandbox=clients.sandbox)
        self.environments: dict[str, EnvironmentSetup] = {
            spec.name: build_environment(spec.name, dict(spec.options), spec.dataset, config.seed, services)
            for spec in config.environments
        }
        self.specs = {spec.name: spec for spec in config.environments}
        self.stop_after_iteration = threading.Event()
        self.stop_now = threading.Event()
        partial = config.partial_rollout
        self.rollout = RolloutManager(
            clients.replicas, tokenizer, self.environments,
            RolloutLimits(partial.iteration_token_budget, partial.segment_token_budget,
                          config.max_concurrent_rollouts or 64,
                          {s.name: s.max_turns for s in config.environments}, options.rpc_timeout_s),
            persist=lambda group: store.save_group(run_id, group), seed=config.seed)
        self._ptx = _read_ptx(config.ptx_dataset, tokenizer) if config.ptx_dataset else []
        self._overlap = options.overlap_rollout and not options.colocated
        self._prefetch: tuple[int, Future[_Rollout]] | None = None
        self._prefetcher = ThreadPoolExecutor(1, thread_name_prefix="prefetch") if self._overlap else None

    # --- control ---

    def request_stop(self, immediate: bool) -> None:
        self.stop_after_iteration.set()
        if immediate:
            self.stop_now.set()
            self.rollout.stop()

    def done(self) -> bool:
        run, _ = self._run()
        return bool(self.config.iterations) and run.completed_iterations >= self.config.iterations

    def close(self) -> None:
        """Stop a rollout running ahead (overlap) and wait for it; its samples stay buffered."""
        if self._prefetch is not None:
            self.rollout.stop()
            wait([self._prefetch[1]])
            self._prefetch = None
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True)

    # --- one iteration ---

    def run_iteration(self) -> pb.IterationRecord:
        run, _ = self._run()
        iteration = run.completed_iterations
        with self.options.tracer.start_as_current_span(
                "rl.iteration", context=Context(),
                attributes={"k2rl.run_id": self.run_id, "k2rl.iteration": iteration}) as span:
            record = self._iteration(iteration)
            span.set_attribute("k2rl.weight_version", record.new_weight_version)
            return record

    def _iteration(self, iteration: int) -> pb.IterationRecord:
        started = Timestamp()
        started.GetCurrentTime()
        timings = _Timings()
        batch = self.store.train_batch(self.run_id)
        if batch is None or batch.iteration != iteration:
            rollout = self._prefetched(iteration) or self._rollout_phase(iteration)
            timings.phases.extend(rollout.timings.phases)
            batch = self._fix_batch(rollout)
        self._prefetch_next(iteration, batch)
        groups = {self.store.group_key(self.run_id, g.group_id): g for g in self.store.buffered_groups(self.run_id)}
        trained = [groups[key] for key in batch.group_keys if key in groups]
        steps = self._train_phase(iteration, batch, trained, timings) if trained else []
        new_version = self._weight_update_phase(iteration, timings) if steps else batch.rollout_weight_version
        if self.config.checkpoint_every_iterations and (iteration + 1) % self.config.checkpoint_every_iterations == 0:
            with self._phase(iteration, Phase.ITERATION_PHASE_CHECKPOINT, timings):
                self.clients.trainer.SaveCheckpoint(trainer_pb2.SaveCheckpointRequest(
                    directory=self.config.checkpoint_directory or f"runs/{self.run_id}/checkpoints",
                    format=common_pb2.CHECKPOINT_FORMAT_TORCH_DCP, include_optimizer_state=True),
                    timeout=self.options.rpc_timeout_s)
        record = self._record(iteration, started, timings, batch, trained, steps, new_version)
        self._export_critic_data(iteration, trained)
        return record

    def _prefetch_next(self, iteration: int, batch: TrainBatch) -> None:
        """Overlap: start iteration + 1's rollout now, beside this iteration's training and
        weight update; its samples pick up the new weights mid-way (recorded per span)."""
        last = bool(self.config.iterations) and iteration + 1 >= self.config.iterations
        if self._prefetcher is None or last or self.stop_after_iteration.is_set():
            return
        self._prefetch = (iteration + 1, self._prefetcher.submit(
            self._rollout_phase, iteration + 1, frozenset(batch.group_keys)))

    def _prefetched(self, iteration: int) -> _Rollout | None:
        if self._prefetch is None:
            return None
        prefetched_iteration, future = self._prefetch
        self._prefetch = None
        rollout = future.result()  # StopRequested and rollout errors surface here
        return rollout if prefetched_iteration == iteration else None

    def _rollout_phase(self, iteration: int, exclude: frozenset[str] = frozenset()) -> _Rollout:
        """Wake, roll out the buffer and new prompts (not the groups in ``exclude``: a batch
        being trained), sleep. Persists samples as they change, not the train batch."""
        timings = _Timings()
        version = self._fleet_version()
        if self.options.colocated:
            with self._phase(iteration, Phase.ITERATION_PHASE_INFERENCE_WAKE, timings):
                for _, replica in self.clients.replicas:
                    replica.WakeUp(inference_pb2.WakeUpRequest(), timeout=self.options.rpc_timeout_s)
        groups = self._groups_for(iteration, exclude)
        dropped = enforce_staleness(groups, self.config.partial_rollout, version)
        with self._phase(iteration, Phase.ITERATION_PHASE_ROLLOUT, timings):
            outcome = self.rollout.run(groups, self._sampling_for(iteration), iteration,
                                       progress=lambda p: self.options.on_progress(iteration, p))
        self._add_timing(iteration, Phase.ITERATION_PHASE_SCORING, outcome.scoring_seconds, timings)
        for error in outcome.errors:
            logger.warning("rollout: %s", error)
        if self.stop_now.is_set():
            raise StopRequested()
        if self.options.colocated:
            with self._phase(iteration, Phase.ITERATION_PHASE_INFERENCE_SLEEP, timings):
                for _, replica in self.clients.replicas:
                    replica.Sleep(inference_pb2.SleepRequest(level=inference_pb2.SLEEP_LEVEL_1),
                                  timeout=self.options.rpc_timeout_s)
        return _Rollout(iteration, groups, version, _rollout_stats(groups, outcome, dropped), timings)

    def _fix_batch(self, rollout: _Rollout) -> TrainBatch:
        """The complete groups, less those with a sample more than max_version_lag versions
        behind the weights now (their stale samples start over), durable before training."""
        current = self._fleet_version()
        complete = [g for g in rollout.groups if g.complete]
        fresh, stale = split_stale(complete, self.config.partial_rollout.max_version_lag, current)
        for group in stale:
            self.store.save_group(self.run_id, group)
        stats = dict(rollout.stats)
        stats["trajectories_dropped"] += sum(len(g.samples) - sum(s.status is SampleStatus.FINISHED
                                                                   for s in g.samples) for g in stale)
        start_step = self.clients.trainer.GetState(trainer_pb2.GetStateRequest(), timeout=30).step
        batch = TrainBatch(rollout.iteration, [self.store.group_key(self.run_id, g.group_id) for g in fresh],
                           start_step, rollout.weight_version, stats)
        self.store.put_train_batch(self.run_id, batch)
        return batch

    def _groups_for(self, iteration: int, exclude: frozenset[str] = frozenset()) -> list[PromptGroup]:
        """The buffer (oldest first) plus prompts_per_iteration new prompts (K1.5 partial
        rollout: the long tail continues beside fresh prompts), fewer while prompts drawn
        earlier have not started yet (a small iteration token budget must not grow the
        buffer without bound)."""
        groups = [g for g in self.store.buffered_groups(self.run_id)
                  if self.store.group_key(self.run_id, g.group_id) not in exclude]
        untouched = sum(1 for g in groups if all(s.status is SampleStatus.PENDING for s in g.samples))
        missing = max(0, (self.config.prompts_per_iteration or 1) - untouched)
        if missing:
            cursor, cursor_version = self.store.cursor(self.run_id)
            new = draw_groups(self.config, self.environments, cursor, missing, iteration, self.tokenizer,
                              self.options.context_length)
            self.store.add_groups(self.run_id, new, cursor, cursor_version)
            groups += new
        return groups

    def _sampling_for(self, iteration: int) -> Callable[[PromptGroup], common_pb2.SamplingParams]:
        def sampling(group: PromptGroup) -> common_pb2.SamplingParams:
            params = common_pb2.SamplingParams()
            params.CopyFrom(self.config.sampling)
            params.stop_token_ids.extend(t for t in self.tokenizer.stop_token_ids if t not in params.stop_token_ids)
            spec = self.specs[group.environment]
            schedule = spec.temperature_schedule if is_set(spec.temperature_schedule) else \
                self.config.temperature_schedule
            if is_set(schedule):
                params.temperature = temperature_at(schedule, iteration)
            return params
        return sampling

    def _train_phase(self, iteration: int, batch: TrainBatch, trained: list[PromptGroup],
                     timings: _Timings) -> list[trainer_pb2.TrainStepMetrics]:
        if self.options.colocated:
            with self._phase(iteration, Phase.ITERATION_PHASE_TRAINER_ONLOAD, timings):
                self.clients.trainer.Onload(trainer_pb2.OnloadRequest(), timeout=self.options.rpc_timeout_s)
        metrics = []
        with self._phase(iteration, Phase.ITERATION_PHASE_TRAIN, timings):
            current = self.clients.trainer.GetState(trainer_pb2.GetStateRequest(), timeout=30).step
            for index, step_groups in enumerate(split_steps(trained, self.config.train_steps_per_iteration)):
                expected = batch.start_step + index
                if current > expected:
                    logger.info("iteration %d step %d already applied by the trainer; not retraining", iteration,
                                expected)
                    metrics.append(applied_before_restart(expected))
                    continue
                response = self.clients.trainer.TrainStep(
                    self._train_requests(iteration, expected, step_groups, index), timeout=self.options.rpc_timeout_s)
                metrics.append(response.metrics)
                current = response.metrics.step
        if self.options.colocated:
            with self._phase(iteration, Phase.ITERATION_PHASE_TRAINER_OFFLOAD, timings):
                self.clients.trainer.Offload(trainer_pb2.OffloadRequest(), timeout=self.options.rpc_timeout_s)
        return metrics

    def _train_requests(self, iteration: int, expected_step: int, groups: list[PromptGroup],
                        index: int) -> Iterator[trainer_pb2.TrainStepRequest]:
        config = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_RL_K15, expected_step=expected_step,
                                             iteration=iteration, rl=self.config.rl_loss)
        yield trainer_pb2.TrainStepRequest(config=config, ptx_sequences=self._ptx_batch(iteration, index))
        for group in groups:  # one group per message keeps each under the message limit
            yield trainer_pb2.TrainStepRequest(trajectories=group.to_trajectories())

    def _ptx_batch(self, iteration: int, step: int) -> list[trainer_pb2.TokenSequence]:
        count = self.config.ptx_sequences_per_step
        if not self._ptx or not count:
            return []
        start = (iteration * max(self.config.train_steps_per_iteration, 1) + step) * count
        return [self._ptx[(start + i) % len(self._ptx)] for i in range(count)]

    def _weight_update_phase(self, iteration: int, timings: _Timings) -> int:
        with self._phase(iteration, Phase.ITERATION_PHASE_WEIGHT_UPDATE, timings):
            if self.options.colocated:
                # Weights first, KV cache at the next wake: peak memory = weights + IPC buffers.
                for _, replica in self.clients.replicas:
                    replica.WakeUp(inference_pb2.WakeUpRequest(pools=[inference_pb2.MEMORY_POOL_WEIGHTS]),
                                   timeout=self.options.rpc_timeout_s)
            published = self.clients.trainer.PublishWeights(trainer_pb2.PublishWeightsRequest(),
                                                            timeout=self.options.rpc_timeout_s)
            version = published.version.version
            self.wait_for_version(version)
        return version

    def _export_critic_data(self, iteration: int, trained: list[PromptGroup]) -> None:
        """ExportCriticData for the groups just trained, on the configured iterations. After
        the iteration's commit, so at most once per group: a
        crash in between loses that export (critic data is a by-product, never training data
        of this run); an unreachable judge is logged, not fatal."""
        export = self.config.critic_data
        if not export.every_iterations or (iteration + 1) % export.every_iterations:
            return
        if self.clients.judge is None:
            logger.warning("critic_data is set but no judge is configured; nothing exported")
            return
        wanted = set(export.environments)
        rows = 0
        for group in trained:
            if wanted and group.environment not in wanted:
                continue
            request = judge_pb2.ExportCriticDataRequest(
                prompt_id=group.task.get("task_id", group.group_id), dataset=export.dataset,
                min_margin=export.min_margin,
                prompt=self.tokenizer.decode(group.prompt_token_ids, skip_special_tokens=True),
                samples=[judge_pb2.CriticDataSample(
                    response=self.tokenizer.decode(s.output_token_ids, skip_special_tokens=True),
                    reward=s.reward, verifier=s.verifier or group.environment)
                    for s in group.samples if s.reward is not None])
            try:
                rows += self.clients.judge.ExportCriticData(request, timeout=self.options.rpc_timeout_s).rows_written
            except grpc.RpcError as error:
                logger.warning("iteration %d: ExportCriticData for %s failed: %s: %s", iteration, group.group_id,
                               error.code().name, error.details())
        logger.info("iteration %d: %d critic-refinement pairs exported", iteration, rows)

    def wait_for_version(self, version: int) -> None:
        """Block until every live replica serves ``version``; WeightUpdateFailed if it fails."""
        stream = self.clients.checkpoint_engine.WaitForVersion(
            ce_pb2.WaitForVersionRequest(min_version=version), timeout=self.options.weight_update_timeout_s)
        for message in stream:
            if message.phase == ce_pb2.VERSION_PHASE_FAILED:
                raise WeightUpdateFailed(f"version {version}: {message.error.code}: {message.error.message}")
            if message.phase == ce_pb2.VERSION_PHASE_COMPLETE and message.replicas_ready >= message.replicas_total:
                return
        raise WeightUpdateFailed(f"version {version}: WaitForVersion ended before the version completed")

    def _fleet_version(self) -> int:
        return self.clients.checkpoint_engine.GetVersion(ce_pb2.GetVersionRequest(), timeout=30).fleet_version

    # --- recording ---

    def _record(self, iteration: int, started: Timestamp, timings: _Timings, batch: TrainBatch,
                trained: list[PromptGroup], steps: list[trainer_pb2.TrainStepMetrics],
                new_version: int) -> pb.IterationRecord:
        ended = Timestamp()
        ended.GetCurrentTime()
        rollout = pb.RolloutStats(**batch.rollout)
        record = pb.IterationRecord(iteration=iteration, start_time=started, end_time=ended, phases=timings.phases,
                                    rollout_weight_version=batch.rollout_weight_version,
                                    new_weight_version=new_version, rollout=rollout,
                                    environments=_environment_stats(trained), train_steps=steps)
        event = pb.WatchRunResponse(event_time=ended, iteration=iteration, iteration_finished=record)
        while True:  # StopRun may rewrite the run record concurrently; nothing is written on a conflict
            run, version = self._run()
            if run.completed_iterations != iteration:
                raise RuntimeError(f"iteration {iteration} was recorded by someone else")
            self._mark_completed(run, iteration, new_version, trained, steps)
            try:
                self.store.commit_iteration(run, version, record, trained, event)
                return record
            except VersionConflict:
                continue

    def _mark_completed(self, run: pb.Run, iteration: int, new_version: int, trained: list[PromptGroup],
                        steps: list[trainer_pb2.TrainStepMetrics]) -> None:
        run.completed_iterations = iteration + 1
        run.current_iteration = iteration + 1
        run.current_phase = Phase.ITERATION_PHASE_UNSPECIFIED
        run.weight_version = new_version
        if steps:
            run.trainer_step = steps[-1].step
        trained_ids = {g.group_id for g in trained}
        run.partial_rollouts_buffered = sum(
            1 for g in self.store.buffered_groups(self.run_id) if g.group_id not in trained_ids
            for s in g.samples if s.status is SampleStatus.PAUSED)

    def _run(self) -> tuple[pb.Run, int]:
        found = self.store.get_run(self.run_id)
        if found is None:
            raise LookupError(f"run {self.run_id} vanished from the state store")
        return found

    def _phase(self, iteration: int, phase: int, timings: _Timings) -> _PhaseTimer:
        return _PhaseTimer(self, iteration, phase, timings)

    def _add_timing(self, iteration: int, phase: int, seconds: float, timings: _Timings) -> None:
        start = Timestamp()
        start.FromNanoseconds(time.time_ns() - int(seconds * 1e9))
        timings.phases.append(pb.PhaseTiming(phase=phase, start_time=start, duration_ms=seconds * 1e3))
        self.options.on_phase(iteration, phase, seconds * 1e3)


class _PhaseTimer:
    """Times a phase, reports its start and end, and records its PhaseTiming."""

    def __init__(self, loop: IterationLoop, iteration: int, phase: int, timings: _Timings) -> None:
        self.loop, self.iteration, self.phase, self.timings = loop, iteration, phase, timings

    def __enter__(self) -> None:
        name = pb.IterationPhase.Name(self.phase).removeprefix("ITERATION_PHASE_").lower()
        self.span_scope = self.loop.options.tracer.start_as_current_span(f"rl.phase.{name}")
        self.span_scope.__enter__()
        self.started = time.perf_counter()
        self.loop.options.on_phase(self.iteration, self.phase, None)

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.span_scope.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self.loop._add_timing(self.iteration, self.phase, time.perf_counter() - self.started, self.timings)


def _rollout_stats(groups: list[PromptGroup], outcome: RolloutOutcome, dropped: int) -> dict[str, float]:
    seconds = max(outcome.generation_seconds, 1e-9)
    return {"prompts": len(groups), "trajectories_finished": outcome.finished,
            "trajectories_resumed": outcome.resumed, "trajectories_paused": outcome.paused,
            "trajectories_dropped": dropped + len(outcome.errors), "generated_tokens": outcome.generated_tokens,
            "generation_tokens_per_second": outcome.generated_tokens / seconds}


def _environment_stats(groups: list[PromptGroup]) -> list[pb.EnvironmentStats]:
    by_env: dict[str, list[Sample]] = {}
    for group in groups:
        by_env.setdefault(group.environment, []).extend(group.samples)
    stats = []
    for name, samples in sorted(by_env.items()):
        rewards = [s.reward or 0.0 for s in samples]
        mean = sum(rewards) / len(rewards)
        std = (sum((r - mean) ** 2 for r in rewards) / len(rewards)) ** 0.5
        stats.append(pb.EnvironmentStats(
            name=name, trajectories=len(samples), reward_mean=mean, reward_std=std,
            pass_rate=sum(s.passed for s in samples) / len(samples),
            mean_response_tokens=sum(s.model_tokens for s in samples) / len(samples),
            truncated_fraction=sum(s.finish_reason == "length" for s in samples) / len(samples)))
    return stats


def _read_ptx(path: str, tokenizer: Tokenizer) -> list[trainer_pb2.TokenSequence]:
    """PTX data (K2 section 3.2.3): one curated document per non-empty line of a text file."""
    lines = [line for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    return [trainer_pb2.TokenSequence(token_ids=tokenizer.encode(line, add_special_tokens=True)
                                      + [t for t in tokenizer.stop_token_ids[:1]], sequence_id=f"ptx-{i}")
            for i, line in enumerate(lines)]


