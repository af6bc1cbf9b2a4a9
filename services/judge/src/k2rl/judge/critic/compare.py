"""Pairwise comparison of two responses: pre-checks, critic call(s), position swap.

With position swap the critic judges (A, B) and (B, A); verdicts that disagree once mapped
back become a tie (LLM judges favour a position; a flip shows the verdict was the
position's, not the content's). Mandatory rubrics decide: a response that violates one
(per the deterministic pre-checks or the critic) loses to one that does not.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

from k2rl.judge.critic.client import Critic
from k2rl.judge.critic.parse import CriticVerdict, parse_comparison
from k2rl.judge.critic.prechecks import prescriptive_violations
from k2rl.judge.critic.prompt import Turn, comparison_messages
from k2rl.judge.critic.rubrics import Rubric

A, B, TIE = "A", "B", "tie"
_SWAPPED = {A: B, B: A, TIE: TIE}


@dataclass(frozen=True)
class RubricOutcome:
    name: str
    preference: str
    a_violates: bool
    b_violates: bool
    rationale: str


@dataclass
class Comparison:
    """Outcome of A vs B. ``probability_a_better`` is 0.5 for ties."""

    preference: str
    probability_a_better: float
    rubrics: list[RubricOutcome] = field(default_factory=list)
    rationale: str = ""
    position_consistent: bool = True
    flipped: bool = False  # the two orders named different winners
    unparseable: int = 0  # critic replies that held no verdict
    critic_calls: int = 0


def _probability(verdict: CriticVerdict) -> float:
    if verdict.overall == A:
        return verdict.confidence
    if verdict.overall == B:
        return 1.0 - verdict.confidence
    return 0.5


def _unswap(verdict: CriticVerdict) -> CriticVerdict:
    """A verdict on (B, A) expressed in terms of the original (A, B)."""
    rubrics = {
        name: type(j)(j.name, _SWAPPED[j.preference], j.b_violates, j.a_violates, j.rationale)
        for name, j in verdict.rubrics.items()
    }
    return CriticVerdict(_SWAPPED[verdict.overall], verdict.confidence, verdict.rationale, rubrics)


class PairwiseComparer:
    """Compares responses with ``critic``; the two orders of a swap run concurrently on ``executor``."""

    def __init__(self, critic: Critic, executor: Executor) -> None:
        self.critic = critic
        self._executor = executor

    def compare(self, prompt: str, context: Sequence[Turn], response_a: str, response_b: str,
                rubrics: Sequence[Rubric], position_swap: bool, reference: str = "") -> Comparison:
        rubrics = list(rubrics)
        names = {r.name for r in rubrics}
        found_a = prescriptive_violations(response_a, names)
        found_b = prescriptive_violations(response_b, names)
        mandatory = {r.name for r in rubrics if r.mandatory}
        decided = self._decided_by_prechecks(rubrics, found_a, found_b, mandatory)
        if decided is not None:
            return decided

        def ask(first: str, second: str) -> CriticVerdict | None:
            reply = self.critic.complete(comparison_messages(prompt, context, first, second, rubrics, reference))
            return parse_comparison(reply, rubrics)

        forward = self._executor.submit(ask, response_a, response_b)
        backward = self._executor.submit(ask, response_b, response_a) if position_swap else None
        verdicts = [forward.result()]
        if backward is not None:
            swapped = backward.result()
            verdicts.append(_unswap(swapped) if swapped is not None else None)
        return self._combine(rubrics, verdicts, found_a, found_b, mandatory)

    @staticmethod
    def _decided_by_prechecks(rubrics: list[Rubric], found_a: dict[str, str], found_b: dict[str, str],
                              mandatory: set[str]) -> Comparison | None:
        a_bad, b_bad = bool(mandatory & set(found_a)), bool(mandatory & set(found_b))
        if a_bad == b_bad:
            return None
        winner = B if a_bad else A
        outcomes = [
            RubricOutcome(r.name, (B if r.name in found_a else A) if (r.name in found_a) != (r.name in found_b) else TIE,
                          r.name in found_a, r.name in found_b,
                          f"pre-check: {found_a.get(r.name) or found_b.get(r.name)!r}")
            for r in rubrics if r.name in found_a or r.name in found_b
        ]
        loser = "A" if a_bad else "B"
        return Comparison(winner, 1.0 if winner == A else 0.0, outcomes,
                          f"response {loser} violates a mandatory prescriptive rubric (deterministic pre-check)")

    @staticmethod
    def _combine(rubrics: list[Rubric], verdicts: list[CriticVerdict | None], found_a: dict[str, str],
                 found_b: dict[str, str], mandatory: set[str]) -> Comparison:
        parsed = [v for v in verdicts if v is not None]
        unparseable = len(verdicts) - len(parsed)
        outcomes = []
        for rubric in rubrics:
            judged = [v.rubrics[rubric.name] for v in parsed if rubric.name in v.rubrics]
            prefs = {j.preference for j in judged}
            a_violates = rubric.name in found_a or any(j.a_violates for j in judged)
            b_violates = rubric.name in found_b or any(j.b_violates for j in judged)
            preference = prefs.pop() if len(prefs) == 1 else TIE
            if a_violates != b_violates:
                preference = B if a_violates else A
            rationale = found_a.get(rubric.name) or found_b.get(rubric.name) or (judged[0].rationale if judged else "")
            outcomes.append(RubricOutcome(rubric.name, preference, a_violates, b_violates, rationale))
        if not parsed:
            return Comparison(TIE, 0.5, outcomes, "critic reply held no verdict", position_consistent=False,
                              unparseable=unparseable, critic_calls=len(verdicts))
        overall = {v.overall for v in parsed}
        consistent = len(overall) == 1 and unparseable == 0
        flipped = {A, B} <= overall
        if consistent:
            preference = parsed[0].overall
            probability = sum(_probability(v) for v in parsed) / len(parsed)
        else:
            preference, probability = TIE, 0.5
        violated_a = any(o.a_violates for o in outcomes if o.name in mandatory)
        violated_b = any(o.b_violates for o in outcomes if o.name in mandatory)
        if violated_a != violated_b:  # a mandatory rubric is not traded off against others
            preference, probability = (B, 0.0) if violated_a else (A, 1.0)
        return Comparison(preference, probability, outcomes, parsed[0].rationale, consistent, flipped,
                          unparseable, len(verdicts))
