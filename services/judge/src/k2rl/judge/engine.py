"""The judge's domain logic: dispatch to verifiers, hack-check, timeouts, batching,
ranking of rubric samples, comparisons and critic-refinement data. No gRPC types here
except the sandbox stub the code verifier calls."""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from k2rl.core.errors import FailedPrecondition, InvalidArgument, ServiceError, Unavailable
from k2rl.judge import hack_check
from k2rl.judge.critic.client import Critic, CriticUnavailable
from k2rl.judge.critic.compare import A, B, Comparison, PairwiseComparer
from k2rl.judge.critic.parse import parse_constraint
from k2rl.judge.critic.prompt import Turn, constraint_messages
from k2rl.judge.critic.ranking import PairOutcome, bradley_terry, win_rates
from k2rl.judge.critic.rubrics import Rubric
from k2rl.judge.dataset import CriticDataWriter, Sample
from k2rl.judge.metrics import JudgeMetrics
from k2rl.judge.tasks import (
    AgenticTask,
    CryptarithmTask,
    ExactMatchTask,
    Game24Task,
    InstructionTask,
    MathTask,
    MorseTask,
    RubricTask,
    SafetyTask,
    ScoreItem,
    SudokuTask,
)
from k2rl.judge.verdict import Check, ScoringError, Verdict
from k2rl.judge.verifiers import exact_match, instruction, tool_use
from k2rl.judge.verifiers.code import CodeTask, CodeVerifier, extract_code
from k2rl.judge.verifiers.math import MathVerifier, multiple_final_answers
from k2rl.judge.verifiers.puzzles import cryptarithm, game24, morse, sudoku

log = logging.getLogger(__name__)

RANKING_VERIFIER = "rubric_ranking/1"
REFERENCE_VERIFIER = "rubric_vs_reference/1"
SAFETY_VERIFIER = "safety_rubric/1"


class Judge:
    """Scores responses; thread-safe. ``critic`` None = no critic-judged tasks."""

    def __init__(self, *, math: MathVerifier, code: CodeVerifier, critic: Critic | None, metrics: JudgeMetrics,
                 score_concurrency: int = 8, critic_concurrency: int = 8, verifier_timeout_s: float = 10.0,
                 code_timeout_s: float = 120.0, math_timeout_s: float = 5.0, critic_timeout_s: float = 120.0,
                 ranking_method: str = "bradley_terry", rank_position_swap: bool = True,
                 critic_data: CriticDataWriter | None = None, critic_dataset: str = "critic_refinement") -> None:
        self._math, self._code, self._metrics = math, code, metrics
        self._items = ThreadPoolExecutor(score_concurrency, thread_name_prefix="judge-score")
        # Critic HTTP calls run on _critic_pool and never wait on anything; whole pairwise
        # comparisons (which wait on their critic calls) run on _pairs. Sharing one bounded
        # pool would deadlock once every thread waits on a call queued behind it.
        self._critic_pool = ThreadPoolExecutor(critic_concurrency, thread_name_prefix="judge-critic")
        self._pairs = ThreadPoolExecutor(critic_concurrency, thread_name_prefix="judge-pairs")
        self._comparer = PairwiseComparer(critic, self._critic_pool) if critic is not None else None
        self._critic = critic
        # Outer limits per task family. The math pool (its own timeout plus queueing, both
        # in math_timeout_s here) and the sandbox deadline enforce theirs; these add a margin.
        self._timeouts = {"math": math_timeout_s + 5, "code": code_timeout_s + 5,
                          "critic": critic_timeout_s * 3, "default": verifier_timeout_s}
        self._critic_timeout_s, self._critic_concurrency = critic_timeout_s, critic_concurrency
        self._ranking = bradley_terry if ranking_method == "bradley_terry" else win_rates
        self._rank_swap = rank_position_swap
        self._critic_data, self._critic_dataset = critic_data, critic_dataset
        self._flip_lock = threading.Lock()
        self._swapped = 0
        self._flipped = 0

    def close(self) -> None:
        self._items.shutdown(wait=False, cancel_futures=True)
        self._critic_pool.shutdown(wait=False, cancel_futures=True)
        self._pairs.shutdown(wait=False, cancel_futures=True)

    # ---- scoring -------------------------------------------------------------------------

    def score(self, item: ScoreItem) -> Verdict:
        return self.score_batch([item], name_items=False)[0]

    def score_batch(self, items: Sequence[ScoreItem], name_items: bool = True) -> list[Verdict]:
        """Verdicts in request order. RUBRIC items sharing a group key are ranked together.
        ``name_items``: errors name the item (``requests[i].``), as ScoreBatch's contract says."""
        verdicts: list[Verdict | None] = [None] * len(items)
        groups: dict[str, list[int]] = defaultdict(list)
        futures: list[tuple[list[int], Future[list[Verdict]], str]] = []
        for index, item in enumerate(items):
            if isinstance(item.task, RubricTask):
                groups[item.group_key].append(index)
            else:
                futures.append(([index], self._items.submit(self._timed, self._verify, item), self._family(item)))
        for indices in groups.values():
            members = [items[i] for i in indices]
            futures.append((indices, self._items.submit(self._timed_group, members), "ranking"))
        for indices, future, family in futures:
            timeout = self._timeouts[family] if family != "ranking" else self._ranking_timeout(len(indices))
            for index, verdict in zip(indices, self._result(future, timeout, indices, name_items), strict=True):
                verdicts[index] = verdict
        done = [v for v in verdicts if v is not None]
        self._export_critic_data(items, done)
        return done

    def _ranking_timeout(self, k: int) -> float:
        """K samples need K(K-1) critic calls (both orders), ``critic_concurrency`` at a time."""
        calls = k * (k - 1)
        return self._critic_timeout_s * (1 + -(-calls // self._critic_concurrency)) + 5

    def _result(self, future: Future[list[Verdict]], timeout: float, indices: list[int],
                batched: bool) -> list[Verdict]:
        try:
            return future.result(timeout=timeout)
        except FutureTimeout:
            future.cancel()
            error = ScoringError("VERIFIER_TIMEOUT", f"scoring took longer than {timeout:g}s")
            return [Verdict.unscored("timeout", error) for _ in indices]
        except ServiceError as error:
            if batched:  # name the offending item, as ScoreBatch's contract says
                raise type(error)(error.message, field=_join_field(f"requests[{indices[0]}]", error.field)) from None
            raise

    @staticmethod
    def _family(item: ScoreItem) -> str:
        if isinstance(item.task, MathTask):
            return "math"
        if isinstance(item.task, CodeTask):
            return "code"
        if isinstance(item.task, SafetyTask) or (
                isinstance(item.task, InstructionTask) and any(not c.checker for c in item.task.constraints)):
            return "critic"
        return "default"

    def _timed(self, fn: Callable[[ScoreItem], Verdict], item: ScoreItem) -> list[Verdict]:
        started = time.perf_counter()
        verdict = fn(item)
        if not item.skip_hack_check and verdict.error is None:
            findings = self._hack_findings(item, verdict)
            verdict.penalise(findings)
            for finding in findings:
                self._metrics.hack_findings.labels(finding.kind).inc()
        verdict.latency_ms = (time.perf_counter() - started) * 1000
        self._observe(verdict)
        return [verdict]

    def _timed_group(self, items: list[ScoreItem]) -> list[Verdict]:
        started = time.perf_counter()
        verdicts = self._rank_group(items)
        for verdict in verdicts:
            verdict.latency_ms = (time.perf_counter() - started) * 1000
            self._observe(verdict)
        return verdicts

    def _observe(self, verdict: Verdict) -> None:
        outcome = ("error" if verdict.error else "hacked" if verdict.hack_findings
                   else "passed" if verdict.passed else "failed")
        self._metrics.verdicts.labels(verdict.verifier, outcome).inc()
        self._metrics.latency.labels(verdict.verifier).observe(verdict.latency_ms / 1000)

    def _verify(self, item: ScoreItem) -> Verdict:
        task, response = item.task, item.response
        if isinstance(task, MathTask):
            kills = self._math.kills
            verdict = self._math.verify(task.answer, response, task.relative_tolerance)
            if self._math.kills > kills:
                self._metrics.math_worker_kills.inc(self._math.kills - kills)
            return verdict
        if isinstance(task, CodeTask):
            return self._code.verify(task, extract_code(response, task.language))
        if isinstance(task, InstructionTask):
            return self._verify_instruction(item, task)
        if isinstance(task, ExactMatchTask):
            return exact_match.verify(task.accepted, task.case_sensitive, response)
        if isinstance(task, Game24Task):
            return game24.verify(task.numbers, task.target, response)
        if isinstance(task, SudokuTask):
            return sudoku.verify(task.grid, response)
        if isinstance(task, CryptarithmTask):
            return cryptarithm.verify(task.equation, response)
        if isinstance(task, MorseTask):
            return morse.verify(task.text, task.decode, response)
        if isinstance(task, AgenticTask):
            return tool_use.verify(task.checkpoints, task.expected_state, item.tool_calls, item.final_state)
        if isinstance(task, SafetyTask):
            return self._verify_safety(item, task)
        raise TypeError(f"no verifier for {type(task).__name__}")

    def _hack_findings(self, item: ScoreItem, verdict: Verdict) -> list[hack_check.HackFinding]:
        findings = list(hack_check.false_compliance_claims(item.response, verdict.passed))
        if isinstance(item.task, MathTask):
            spray = multiple_final_answers(item.response)
            findings += [spray] if spray else []
        if isinstance(item.task, CodeTask):
            findings += hack_check.code_hacks(extract_code(item.response, item.task.language), item.task.tests)
        return findings

    # ---- critic-judged tasks -------------------------------------------------------------

    def _require_critic(self) -> Critic:
        if self._critic is None:
            raise FailedPrecondition(
                "this needs the critic, and none is configured: set critic_base_url "
                "(K2RL_CRITIC_BASE_URL) to an OpenAI-compatible endpoint")
        return self._critic

    def _ask_constraint(self, item: ScoreItem, name: str, text: str) -> Check:
        critic = self._require_critic()
        reply = critic.complete(constraint_messages(item.prompt, item.response, text))
        parsed = parse_constraint(reply)
        if parsed is None:
            self._metrics.critic_unparseable.inc()
            return Check(name, False, "critic reply held no verdict; counted as not satisfied")
        return Check(name, parsed[0], f"critic: {parsed[1]}")

    def _verify_instruction(self, item: ScoreItem, task: InstructionTask) -> Verdict:
        checks = []
        try:
            for index, constraint in enumerate(task.constraints):
                if constraint.checker:
                    try:
                        checks.append(instruction.check_constraint(constraint, item.response))
                    except InvalidArgument as error:
                        raise InvalidArgument(error.message, field=_join_field(
                            f"task.instruction.constraints[{index}]", error.field)) from None
                else:
                    checks.append(self._ask_constraint(item, f"critic: {constraint.description[:60]}",
                                                       constraint.description))
        except CriticUnavailable as error:
            return Verdict.unscored(instruction.VERIFIER, ScoringError("CRITIC_UNAVAILABLE", str(error)))
        return Verdict.from_checks(instruction.VERIFIER, checks)

    def _verify_safety(self, item: ScoreItem, task: SafetyTask) -> Verdict:
        try:
            checks = [self._ask_constraint(item, r.name, r.criterion) for r in task.rubrics]
        except CriticUnavailable as error:
            return Verdict.unscored(SAFETY_VERIFIER, ScoringError("CRITIC_UNAVAILABLE", str(error)))
        verdict = Verdict.from_checks(SAFETY_VERIFIER, checks)
        verdict.reward = float(verdict.passed)  # K2: a binary attack success/failure label
        return verdict

    def compare(self, prompt: str, context: Sequence[Turn], response_a: str, response_b: str,
                rubrics: Sequence[Rubric], position_swap: bool, reference: str = "") -> Comparison:
        self._require_critic()
        assert self._comparer is not None
        try:
            comparison = self._comparer.compare(prompt, context, response_a, response_b, rubrics, position_swap,
                                                reference)
        except CriticUnavailable as error:
            raise Unavailable(str(error)) from None
        self._record(comparison, position_swap)
        return comparison

    def _record(self, comparison: Comparison, swapped: bool) -> None:
        if comparison.critic_calls == 0:
            outcome = "prechecked"
        elif not swapped:
            outcome = "single_order"
        else:
            outcome = "consistent" if comparison.position_consistent else (
                "flipped" if comparison.flipped else "inconsistent")
        self._metrics.comparisons.labels(outcome).inc()
        if comparison.unparseable:
            self._metrics.critic_unparseable.inc(comparison.unparseable)
        if swapped and comparison.critic_calls == 2:
            with self._flip_lock:
                self._swapped += 1
                self._flipped += int(comparison.flipped)
                self._metrics.flip_rate.set(self._flipped / self._swapped)

    def _rank_group(self, items: list[ScoreItem]) -> list[Verdict]:
        """Rank the K samples of one prompt; a lone sample is compared with its reference."""
        first = items[0]
        task = first.task
        assert isinstance(task, RubricTask)
        try:
            if len(items) == 1:
                return [self._against_reference(first, task)]
            return self._rank(items, task)
        except Unavailable as error:
            return [Verdict.unscored(RANKING_VERIFIER, ScoringError("CRITIC_UNAVAILABLE", error.message))
                    for _ in items]

    def _against_reference(self, item: ScoreItem, task: RubricTask) -> Verdict:
        if not task.reference_response:
            raise FailedPrecondition(
                "a RUBRIC item is ranked against the other samples of its prompt (same task_id) in one "
                "ScoreBatch, or compared with rubric.reference_response; this one has neither", field="task.rubric")
        comparison = self.compare(item.prompt, item.context, item.response, task.reference_response, task.rubrics,
                                  True)
        check = Check("vs reference", comparison.preference == A, comparison.rationale[:300],
                      score=comparison.probability_a_better)
        return Verdict(REFERENCE_VERIFIER, comparison.probability_a_better, comparison.preference == A, [check])

    def _rank(self, items: list[ScoreItem], task: RubricTask) -> list[Verdict]:
        k = len(items)
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        first = items[0]
        futures = [self._pairs.submit(
            self.compare, first.prompt, first.context, items[i].response, items[j].response, task.rubrics,
            self._rank_swap, task.reference_response) for i, j in pairs]
        comparisons = [f.result() for f in futures]
        outcomes = [PairOutcome(i, j, c.probability_a_better) for (i, j), c in zip(pairs, comparisons, strict=True)]
        rewards = self._ranking(k, outcomes)
        verdicts = []
        for index, reward in enumerate(rewards):
            checks = []
            for (i, j), comparison in zip(pairs, comparisons, strict=True):
                if index not in (i, j):
                    continue
                other = j if index == i else i
                won = comparison.preference == (A if index == i else B)
                p = comparison.probability_a_better if index == i else 1 - comparison.probability_a_better
                consistency = "" if comparison.position_consistent else " (orders disagreed: tie)"
                checks.append(Check(f"vs sample {other}", won, f"{comparison.preference}{consistency}", score=p))
            verdicts.append(Verdict(RANKING_VERIFIER, reward, reward > 0.5, checks))
        return verdicts

    # ---- critic refinement data ----------------------------------------------------------

    def export_critic_data(self, prompt_id: str, prompt: str, samples: Sequence[Sample], dataset: str = "",
                           min_margin: float | None = None) -> tuple[int, str]:
        """The ExportCriticData RPC: append one prompt's preference pairs; (rows written, path)."""
        if self._critic_data is None:
            raise FailedPrecondition("the judge has no critic data directory; set critic_data_dir",
                                     field="dataset")
        dataset = dataset or self._critic_dataset
        path = self._critic_data.path(dataset)
        try:
            rows = self._critic_data.write(dataset, prompt_id, prompt, samples, min_margin)
        except OSError as error:
            raise Unavailable(f"cannot write {path}: {error}") from None
        return rows, str(path)

    def _export_critic_data(self, items: Sequence[ScoreItem], verdicts: Sequence[Verdict]) -> None:
        if self._critic_data is None:
            return
        groups: dict[str, list[int]] = defaultdict(list)
        for index, (item, verdict) in enumerate(zip(items, verdicts, strict=True)):
            if verdict.error is None and not isinstance(item.task, RubricTask | SafetyTask):
                groups[item.group_key].append(index)
        for key, indices in groups.items():
            if len(indices) < 2:
                continue
            samples = [Sample(items[i].response, verdicts[i].reward, verdicts[i].verifier) for i in indices]
            try:
                self._critic_data.write(self._critic_dataset, items[indices[0]].task_id or key[:64],
                                        items[indices[0]].prompt, samples)
            except OSError as error:  # data export must never fail scoring
                log.warning("critic data export failed", extra={"fields": {"error": str(error)}})


def _join_field(prefix: str, field: str | None) -> str:
    return f"{prefix}.{field}" if field else prefix
