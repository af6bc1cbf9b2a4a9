"""Rollout manager: concurrent Generate streams, K samples per prompt, partial rollout.

Every unfinished sample of the groups handed to ``run`` is one unit of work: resumed
(paused) samples first, then fresh ones (K2 section 3.3.4, partial rollout). At most
``max_concurrent`` samples generate at once, each on the least-loaded inference replica
that is up; a replica that answers UNAVAILABLE is skipped for ``replica_down_s`` and the
sample continues on another one from the tokens it already has.
Each sample is its own ``Generate(n=1)`` so it can be paused and resumed alone; samples
get distinct seeds derived from the run seed and the trajectory id.

Budgets. ``token_budget`` (per sample, budget control, K2 section 3.2.3) becomes
max_tokens; a response that reaches it is finished as truncated (LENGTH) and scored.
``segment_token_budget`` caps the tokens a sample generates per iteration: reaching it
pauses the sample. When the iteration's ``iteration_token_budget`` is spent, every
running request is aborted at the replicas and its tokens so far (with logprobs and the
weight version of each span) are kept: the sample is paused, and the caller persists it.

Scoring overlaps generation: a sample that stops is handed to a scoring pool (the
environment's ``step``, which may call the judge), freeing its generation slot at once.
Multi-turn episodes step the environment between turns and append its observation as a
TOOL span.
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import grpc

from k2rl.common.v1 import common_pb2
from k2rl.controller.environments import Environment, EnvironmentSetup, StepResult, Task
from k2rl.controller.trajectories import PromptGroup, Sample, SampleStatus, SpanRole
from k2rl.inference.v1 import inference_pb2
from k2rl.models.tokenizer import Tokenizer

STOP, LENGTH, ABORT = common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH, common_pb2.FINISH_REASON_ABORT


@dataclass(frozen=True)
class RolloutLimits:
    """Budgets of one rollout phase; 0 disables a limit."""

    iteration_token_budget: int = 0
    segment_token_budget: int = 0
    max_concurrent: int = 64
    max_turns: dict[str, int] = field(default_factory=dict)  # environment -> model turns; 0/absent = 1
    generate_timeout_s: float = 600.0
    replica_down_s: float = 30.0  # a replica that answered UNAVAILABLE gets no new requests this long


@dataclass
class RolloutProgress:
    finished: int
    target: int
    running: int
    generated_tokens: int


@dataclass
class RolloutOutcome:
    """What a rollout phase did. Samples themselves are updated in place in the groups."""

    finished: int = 0
    paused: int = 0
    resumed: int = 0
    generated_tokens: int = 0
    errors: list[str] = field(default_factory=list)
    generation_seconds: float = 0.0
    scoring_seconds: float = 0.0


@dataclass
class Replica:
    """One inference replica: its stub, the requests this manager runs on it, and until when
    it is considered down (monotonic seconds)."""

    name: str
    stub: Any
    running: set[str] = field(default_factory=set)
    down_until: float = 0.0


SamplingFor = Callable[[PromptGroup], common_pb2.SamplingParams]


class RolloutManager:
    """Runs the samples of prompt groups to completion, a budget, or a stop request."""

    def __init__(self, replicas: list[tuple[str, Any]], tokenizer: Tokenizer,
                 environments: dict[str, EnvironmentSetup], limits: RolloutLimits,
                 persist: Callable[[PromptGroup], None], seed: int = 0) -> None:
        if not replicas:
            raise ValueError("the rollout manager needs at least one inference replica")
        self._replicas = [Replica(name, stub) for name, stub in replicas]
        self._tokenizer = tokenizer
        self._environments = environments
        self._limits = limits
        self._persist = persist
        self._seed = seed
        self._lock = threading.Lock()
        self._group_locks: dict[str, threading.Lock] = {}
        self._stop = threading.Event()
        self._tokens = 0
        self._session = uuid.uuid4().hex[:8]  # request ids of a restarted controller never collide

    # --- public ---

    def stop(self) -> None:
        """Abort every running request now; their samples are paused (StopRun IMMEDIATE)."""
        self._stop.set()
        self._abort_running()

    def run(self, groups: list[PromptGroup], sampling_for: SamplingFor, iteration: int,
            progress: Callable[[RolloutProgress], None] | None = None, progress_every_s: float = 1.0,
            min_weight_version: int = 0) -> RolloutOutcome:
        self._stop.clear()
        self._tokens = 0
        outcome = RolloutOutcome()
        work = [(g, s) for g in groups for s in g.samples if s.status is SampleStatus.PAUSED]
        work += [(g, s) for g in groups for s in g.samples if s.status is SampleStatus.PENDING]
        outcome.resumed = sum(1 for _, s in work if s.status is SampleStatus.PAUSED)
        target = sum(len(g.samples) for g in groups)
        self._group_locks = {g.group_id: threading.Lock() for g in groups}
        scoring: list[Future[None]] = []
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=max(1, self._limits.max_concurrent), thread_name_prefix="rollout") as gen, \
                ThreadPoolExecutor(max_workers=max(1, self._limits.max_concurrent), thread_name_prefix="score") as score:
            futures = [gen.submit(self._run_sample, g, s, sampling_for(g), iteration, min_weight_version,
                                  score, scoring, outcome) for g, s in work]
            pending = set(futures)
            while pending:
                _, pending = wait(pending, timeout=progress_every_s, return_when=FIRST_EXCEPTION)
                if progress is not None:
                    progress(self._progress(groups, target))
            for future in futures:
                future.result()  # worker errors are recorded in outcome; this re-raises bugs only
            outcome.generation_seconds = time.monotonic() - started
            scoring_started = time.monotonic()
            while scoring:
                scoring.pop().result()
            outcome.scoring_seconds = time.monotonic() - scoring_started
        outcome.generated_tokens = self._tokens
        outcome.finished = sum(1 for g in groups for s in g.samples if s.status is SampleStatus.FINISHED)
        outcome.paused = sum(1 for g in groups for s in g.samples if s.status is SampleStatus.PAUSED)
        if progress is not None:
            progress(self._progress(groups, target))
        return outcome

    # --- one sample ---

    def _run_sample(self, group: PromptGroup, sample: Sample, sampling: common_pb2.SamplingParams, iteration: int,
                    min_weight_version: int, score_pool: ThreadPoolExecutor, scoring: list[Future[None]],
                    outcome: RolloutOutcome) -> None:
        if self._stop.is_set():
            return
        env = self._episode(group, sample)
        max_turns = max(1, self._limits.max_turns.get(group.environment, 1))
        generated_this_iteration = 0
        was_paused = sample.status is SampleStatus.PAUSED
        failovers = 0
        while True:
            turn_start = self._turn_start(sample)
            remaining_budget = sample.token_budget - (sample.model_tokens - (len(sample.output_token_ids) - turn_start))
            max_tokens = remaining_budget
            if self._limits.segment_token_budget:
                max_tokens = min(max_tokens, len(sample.output_token_ids) - turn_start
                                 + self._limits.segment_token_budget - generated_this_iteration)
            try:
                finish, produced = self._generate(group, sample, sampling, turn_start, max_tokens, iteration,
                                                  min_weight_version, was_paused)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNAVAILABLE and failovers < len(self._replicas) \
                        and self._any_replica_up() and not self._stop.is_set():
                    failovers += 1  # continue on another replica from the tokens received so far
                    continue
                with self._lock:
                    outcome.errors.append(f"{group.trajectory_id(sample)}: {error.code().name}: {error.details()}")
                self._pause(group, sample, env)
                return
            generated_this_iteration += produced
            was_paused = False
            turn_tokens = len(sample.output_token_ids) - turn_start
            truncated = finish == LENGTH and sample.model_tokens >= sample.token_budget
            if finish == ABORT or (finish == LENGTH and not truncated):
                self._pause(group, sample, env)
                return
            action = env.decode_action(self._tokenizer, sample.output_token_ids[turn_start:turn_start + turn_tokens])
            last_turn = truncated or env.turns_taken + 1 >= max_turns
            if last_turn:
                # Hand the final step to the scoring pool so this generation slot frees now.
                finish_reason = "length" if truncated else "stop"
                future = score_pool.submit(self._score, group, sample, env, action, finish_reason, outcome)
                with self._lock:
                    scoring.append(future)
                return
            result = self._step(group, sample, env, action, outcome)
            if result is None:
                return
            if result.done:
                self._finish(group, sample, env, result, "stop")
                return
            observation = self._tokenizer.encode(result.observation)
            sample.add_tokens(SpanRole.TOOL, observation, [], 0)
            if self._stop.is_set():
                self._pause(group, sample, env)
                return

    def _turn_start(self, sample: Sample) -> int:
        """Where the model's current turn begins: after the last environment observation."""
        tool_ends = [s.end for s in sample.spans if s.role is SpanRole.TOOL]
        return max(tool_ends, default=0)

    def _episode(self, group: PromptGroup, sample: Sample) -> Environment:
        env = self._environments[group.environment].new_episode()
        if sample.env_state:
            env.restore(sample.env_state)
        else:
            env.reset(Task.from_json(group.task))
        return env

    def _generate(self, group: PromptGroup, sample: Sample, sampling: common_pb2.SamplingParams, turn_start: int,
                  max_tokens: int, iteration: int, min_weight_version: int, resumed: bool) -> tuple[int, int]:
        """One Generate stream for the current turn; returns (finish reason, tokens produced)."""
        params = common_pb2.SamplingParams()
        params.CopyFrom(sampling)
        params.n = 1
        params.max_tokens = max(1, max_tokens)
        params.seed = _seed(self._seed, group.trajectory_id(sample), sample.resume_count, len(sample.output_token_ids))
        request_id = f"{group.trajectory_id(sample)}@{iteration}.{len(sample.output_token_ids)}.{self._session}"
        request = inference_pb2.GenerateRequest(
            request_id=request_id,
            prompt_token_ids=inference_pb2.TokenIds(ids=group.prompt_token_ids + sample.output_token_ids[:turn_start]),
            sampling_params=params, resume_output_token_ids=sample.output_token_ids[turn_start:],
            min_weight_version=min_weight_version, priority=1 if resumed else 0)
        replica = self._acquire(request_id)
        produced, finish, abort_sent = 0, ABORT, False
        try:
            for chunk in replica.stub.Generate(request, timeout=self._limits.generate_timeout_s):
                if self._stop.is_set() and not abort_sent:
                    # Covers a stream that started after the budget-wide abort went out.
                    self._abort(replica, [request_id])
                    abort_sent = True
                with self._group_locks[group.group_id]:
                    sample.add_tokens(SpanRole.MODEL, list(chunk.token_ids), list(chunk.logprobs), chunk.weight_version)
                produced += len(chunk.token_ids)
                if self._count(len(chunk.token_ids)):
                    self._abort_running()
                if chunk.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED:
                    finish = chunk.finish_reason
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.UNAVAILABLE:
                self._mark_down(replica)
            raise
        finally:
            self._release(replica, request_id)
        return finish, produced

    def _step(self, group: PromptGroup, sample: Sample, env: Environment, action: str,
              outcome: RolloutOutcome) -> StepResult | None:
        try:
            return env.step(action)
        except Exception as error:  # noqa: BLE001 - an environment failure must not end the iteration
            with self._lock:
                outcome.errors.append(f"{group.trajectory_id(sample)}: environment {group.environment}: {error}")
            self._pause(group, sample, env)
            return None

    def _score(self, group: PromptGroup, sample: Sample, env: Environment, action: str, finish_reason: str,
               outcome: RolloutOutcome) -> None:
        result = self._step(group, sample, env, action, outcome)
        if result is not None:
            self._finish(group, sample, env, result, finish_reason)

    # --- state transitions, each persisted at once ---

    def _finish(self, group: PromptGroup, sample: Sample, env: Environment, result: StepResult, reason: str) -> None:
        with self._group_locks[group.group_id]:
            sample.status = SampleStatus.FINISHED
            sample.finish_reason = reason
            sample.reward = float(result.reward)
            sample.passed = result.passed
            sample.verifier = str(result.info.get("verifier", ""))
            sample.env_state = env.snapshot()
            self._persist(group)
        env.close()

    def _pause(self, group: PromptGroup, sample: Sample, env: Environment) -> None:
        with self._group_locks[group.group_id]:
            if sample.output_token_ids:
                sample.status = SampleStatus.PAUSED
                sample.resume_count += 1
                sample.env_state = env.snapshot()
            self._persist(group)

    # --- replicas and the token budget ---

    def _acquire(self, request_id: str) -> Replica:
        """The least-loaded replica that is up (any replica when all are down)."""
        with self._lock:
            now = time.monotonic()
            candidates = [r for r in self._replicas if r.down_until <= now] or self._replicas
            replica = min(candidates, key=lambda r: len(r.running))
            replica.running.add(request_id)
            return replica

    def _mark_down(self, replica: Replica) -> None:
        with self._lock:
            replica.down_until = time.monotonic() + self._limits.replica_down_s

    def _any_replica_up(self) -> bool:
        with self._lock:
            now = time.monotonic()
            return any(r.down_until <= now for r in self._replicas)

    def _release(self, replica: Replica, request_id: str) -> None:
        with self._lock:
            replica.running.discard(request_id)

    def _count(self, tokens: int) -> bool:
        """Add generated tokens; True exactly once, when the iteration budget is first spent."""
        budget = self._limits.iteration_token_budget
        with self._lock:
            before = self._tokens
            self._tokens += tokens
            crossed = bool(budget) and before < budget <= self._tokens
        if crossed:
            self._stop.set()
        return crossed

    def _abort_running(self) -> None:
        with self._lock:
            targets = [(r, sorted(r.running)) for r in self._replicas if r.running]
        for replica, request_ids in targets:
            self._abort(replica, request_ids)

    def _abort(self, replica: Replica, request_ids: list[str]) -> None:
        try:
            replica.stub.Abort(inference_pb2.AbortRequest(request_ids=request_ids), timeout=30)
        except grpc.RpcError:
            pass  # the streams end anyway (ABORT or an error) and their samples are paused

    def _progress(self, groups: Iterable[PromptGroup], target: int) -> RolloutProgress:
        finished = sum(1 for g in groups for s in g.samples if s.status is SampleStatus.FINISHED)
        with self._lock:
            running = sum(len(r.running) for r in self._replicas)
            tokens = self._tokens
        return RolloutProgress(finished, target, running, tokens)


def _seed(run_seed: int, trajectory_id: str, resume_count: int, position: int) -> int:
    digest = hashlib.blake2b(f"{run_seed}/{trajectory_id}/{resume_count}/{position}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
