"""Math verifier: answer extraction and equivalence, table-driven; a pathological answer
under concurrent load costs one worker, never the service."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from k2rl.judge.procpool import KillingProcessPool
from k2rl.judge.text import extract_final_answer
from k2rl.judge.verifiers.math import MathVerifier, multiple_final_answers

PATHOLOGICAL = r"The answer is $\boxed{9^{9^{9^{9^{9}}}}}$"


@pytest.mark.parametrize(("response", "answer", "how"), [
    (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", "boxed"),
    (r"\boxed{1} then \boxed{\{2, 3\}}", r"\{2, 3\}", "boxed"),  # last box, nested braces
    ("The final answer is: 42.", "42", "answer_is"),
    ("**Answer:** $x+1$", "x+1", "answer_is"),
    ("We get 3 apples, then 17 in total", "17", "last_number"),
    ("<think>maybe \\boxed{5}</think> The answer is 6", "6", "answer_is"),  # thinking ignored
    ("no digits here", None, None),
])
def test_final_answer_extraction(response: str, answer: str | None, how: str | None) -> None:
    got, got_how = extract_final_answer(response)
    assert got == answer
    if how is not None:
        assert got_how == how


CASES = [
    # equivalent forms
    ("1/2", r"so \boxed{0.5}", True),
    (r"\frac{1}{2}", r"\boxed{\dfrac{2}{4}}", True),
    ("x^2+2x+1", "The answer is $(x+1)^2$.", True),
    (r"\frac{\sqrt{2}}{2}", r"\boxed{\frac{1}{\sqrt{2}}}", True),
    ("[1,2)", r"\boxed{[1, 2)}", True),
    (r"\{1,2\}", r"\boxed{\{2,1\}}", True),
    ("2", "The answer is ２", True),  # full-width digit (unicode)
    ("-3", "The answer is \u22123", True),  # unicode minus sign
    # wrong but close
    ("3", r"\boxed{3.0001}", False),
    ("1/3", r"\boxed{0.33}", False),
    ("[1,2)", r"\boxed{[1,2]}", False),
    ("x^2+2x+1", r"\boxed{(x+1)^3}", False),
    # malformed
    ("5", r"\boxed{\frac{}{", False),
    ("5", "I do not know.", False),
    ("5", r"\boxed{" + "(" * 600 + "}", False),  # over the answer length limit
]


@pytest.mark.parametrize(("reference", "response", "correct"), CASES)
def test_equivalence(math_pool: KillingProcessPool, reference: str, response: str, correct: bool) -> None:
    verdict = MathVerifier(math_pool, timeout_s=20).verify(reference, response)
    assert verdict.error is None
    assert verdict.passed is correct
    assert verdict.reward == float(correct)


def test_relative_tolerance_accepts_close_numbers_only_when_asked(math_pool: KillingProcessPool) -> None:
    verifier = MathVerifier(math_pool, timeout_s=20)
    assert not verifier.verify("3.14159", r"\boxed{3.1416}").passed
    assert verifier.verify("3.14159", r"\boxed{3.1416}", relative_tolerance=1e-4).passed
    assert not verifier.verify("3.14159", r"\boxed{3.2}", relative_tolerance=1e-4).passed


def test_huge_response_is_scored_from_its_tail(math_pool: KillingProcessPool) -> None:
    response = "blah " * 400_000 + r"so the answer is \boxed{7}"
    assert MathVerifier(math_pool, timeout_s=20).verify("7", response).passed


def test_unparseable_reference_is_a_scoring_error_not_a_zero(math_pool: KillingProcessPool) -> None:
    verdict = MathVerifier(math_pool, timeout_s=20).verify(r"\frac{", r"\boxed{1}")
    assert verdict.error is not None and verdict.error.code == "BAD_REFERENCE"


def test_answer_spraying_is_found() -> None:
    assert multiple_final_answers(r"\boxed{3} or maybe \boxed{4}") is not None
    assert multiple_final_answers(r"\boxed{3}, i.e. \boxed{ 3 }") is None


def test_pathological_answer_under_concurrent_load_is_killed_and_others_still_score() -> None:
    """Four pathological answers and twelve easy ones at once on a two-worker pool: each
    pathological one fails at its timeout, every easy one is still scored correctly."""
    pool = KillingProcessPool(2, preload=("k2rl.judge.verifiers.math_worker",))
    pool.warm_up()
    verifier = MathVerifier(pool, timeout_s=1.5)
    easy = [(str(n), rf"\boxed{{{n}}}") for n in range(12)]
    jobs = [("1", PATHOLOGICAL)] * 4 + easy
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as threads:
            verdicts = list(threads.map(lambda job: verifier.verify(*job), jobs))
        elapsed = time.monotonic() - started
    finally:
        pool.close()
    assert [v.passed for v in verdicts[:4]] == [False] * 4
    assert all("exceeded" in v.checks[0].detail for v in verdicts[:4])
    assert all(v.passed for v in verdicts[4:]), [v.checks for v in verdicts[4:] if not v.passed]
    assert pool.kills == 4
    # 4 kills at 1.5 s on 2 workers, plus restarts and the easy ones: bounded, not hung.
    assert elapsed < 25
