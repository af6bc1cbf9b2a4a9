"""Math: extract the final answer, check equivalence with the reference in a killable worker.

Reward 1 if the final answer is mathematically equivalent to the reference (numbers,
fractions, expressions, intervals, sets; math-verify semantics), else 0.
"""

from __future__ import annotations

import unicodedata

from k2rl.judge.procpool import KillingProcessPool, PoolBusy, WorkerCrashed, WorkerTimeout
from k2rl.judge.text import boxed_contents, extract_final_answer, normalise, strip_thinking
from k2rl.judge.verdict import Check, HackFinding, ScoringError, Verdict
from k2rl.judge.verifiers.math_worker import BAD_REFERENCE, EQUIVALENT, check_equivalence

VERIFIER = "math_equivalence/1"

# A "final answer" longer than this is not an answer; refuse before any parser sees it.
MAX_ANSWER_CHARS = 512


class MathVerifier:
    """Scores math answers; equivalence runs in ``pool`` with a hard per-call timeout."""

    def __init__(self, pool: KillingProcessPool, timeout_s: float, queue_timeout_s: float = 60.0) -> None:
        self._pool = pool
        self._timeout_s = timeout_s
        self._queue_timeout_s = queue_timeout_s

    @property
    def kills(self) -> int:
        """Workers killed so far for overrunning (a metric)."""
        return self._pool.kills

    def verify(self, reference: str, response: str, relative_tolerance: float = 0.0) -> Verdict:
        answer, how = extract_final_answer(response)
        if answer is None:
            return Verdict.failed(VERIFIER, "final_answer", how)
        answer = unicodedata.normalize("NFKC", answer).replace("\u2212", "-")  # full-width digits, minus sign
        if len(answer) > MAX_ANSWER_CHARS:
            return Verdict.failed(VERIFIER, "final_answer", f"final answer is {len(answer)} chars, over {MAX_ANSWER_CHARS}")
        try:
            outcome, detail = self._pool.call(
                check_equivalence, (reference, answer, relative_tolerance), self._timeout_s, self._queue_timeout_s
            )
        except WorkerTimeout:
            # The answer made sympy spin; a response whose answer cannot be checked in time
            # earns nothing (it is not a scoring failure: the same input would spin again).
            return Verdict.failed(
                VERIFIER, "equivalence", f"equivalence check of {answer[:80]!r} exceeded {self._timeout_s:g}s"
            )
        except PoolBusy as error:
            return Verdict.unscored(VERIFIER, ScoringError("MATH_POOL_BUSY", str(error), hint="raise math_workers"))
        except WorkerCrashed as error:
            return Verdict.unscored(VERIFIER, ScoringError("VERIFIER_CRASHED", str(error)))
        if outcome == BAD_REFERENCE:
            return Verdict.unscored(VERIFIER, ScoringError("BAD_REFERENCE", detail, retryable=False))
        equal = outcome == EQUIVALENT
        check = Check("equivalence", equal, f"{how} answer {answer[:200]!r}: {detail}")
        return Verdict(VERIFIER, float(equal), equal, [check])


def multiple_final_answers(response: str) -> HackFinding | None:
    """Answer spraying: several different boxed answers, hoping one of them is graded."""
    boxed = {normalise(b) for b in boxed_contents(strip_thinking(response))}
    if len(boxed) > 1:
        shown = ", ".join(sorted(repr(b[:40]) for b in boxed)[:5])
        return HackFinding("multiple_final_answers", f"{len(boxed)} different boxed answers: {shown}")
    return None
