"""Pairwise comparison through the real OpenAI client against a scripted HTTP critic
(test double): position swap, flips as ties, pre-checks, mandatory rubrics, garbage."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from k2rl.judge.critic.client import CriticUnavailable, OpenAICritic
from k2rl.judge.critic.compare import TIE, A, B, PairwiseComparer
from k2rl.judge.critic.rubrics import DEFAULT_RUBRICS, Rubric, RubricKind
from k2rl.judge.testing import scripted_critic, shown_responses, verdict_json

RUBRICS = list(DEFAULT_RUBRICS)
GOOD = "Paris is the capital of France."
WEAK = "It might be Paris, or perhaps Lyon."


def prefers_paris(messages: list[dict[str, str]]) -> str:
    a, b = shown_responses(messages)
    return verdict_json(A if a == GOOD else B if b == GOOD else TIE, 0.9)


def always_first(messages: list[dict[str, str]]) -> str:
    return verdict_json(A)


def _comparer(base_url: str) -> tuple[PairwiseComparer, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(4)
    return PairwiseComparer(OpenAICritic(base_url, "test-critic", timeout_s=10), executor), executor


@pytest.mark.parametrize(("a", "b", "preference", "probability"), [
    (GOOD, WEAK, A, 0.9),
    (WEAK, GOOD, B, pytest.approx(0.1)),
])
def test_consistent_verdicts_survive_the_swap(a: str, b: str, preference: str, probability: float) -> None:
    with scripted_critic(prefers_paris) as critic:
        comparer, executor = _comparer(critic.base_url)
        result = comparer.compare("Capital of France?", [], a, b, RUBRICS, position_swap=True)
        executor.shutdown()
    assert (result.preference, result.position_consistent, result.flipped) == (preference, True, False)
    assert result.probability_a_better == probability
    assert len(critic.requests) == 2
    shown = {shown_responses(r["messages"]) for r in critic.requests}
    assert shown == {(a, b), (b, a)}  # both orders were really asked


def test_a_position_biased_critic_is_caught_as_a_flip_and_scored_a_tie() -> None:
    with scripted_critic(always_first) as critic:
        comparer, executor = _comparer(critic.base_url)
        swapped = comparer.compare("q", [], GOOD, WEAK, RUBRICS, position_swap=True)
        single = comparer.compare("q", [], GOOD, WEAK, RUBRICS, position_swap=False)
        executor.shutdown()
    assert (swapped.preference, swapped.probability_a_better, swapped.position_consistent, swapped.flipped) == \
        (TIE, 0.5, False, True)
    assert single.preference == A  # without the swap the bias goes unnoticed


@pytest.mark.parametrize("garbage", ["", "I cannot decide.", "{{{{", "🤖" * 1000])
def test_garbage_replies_are_no_information(garbage: str) -> None:
    with scripted_critic(lambda messages: garbage) as critic:
        comparer, executor = _comparer(critic.base_url)
        result = comparer.compare("q", [], GOOD, WEAK, RUBRICS, position_swap=True)
        executor.shutdown()
    assert (result.preference, result.probability_a_better, result.unparseable) == (TIE, 0.5, 2)


def test_half_garbage_is_not_a_consistent_verdict() -> None:
    replies = iter([verdict_json(A), "garbage"])
    with scripted_critic(lambda messages: next(replies)) as critic:
        comparer, executor = _comparer(critic.base_url)
        result = comparer.compare("q", [], GOOD, WEAK, RUBRICS, position_swap=True)
        executor.shutdown()
    assert (result.preference, result.position_consistent, result.unparseable) == (TIE, False, 1)


def test_initial_praise_decides_without_calling_the_critic() -> None:
    with scripted_critic(always_first) as critic:
        comparer, executor = _comparer(critic.base_url)
        result = comparer.compare("q", [], "Great question! " + GOOD, WEAK, RUBRICS, position_swap=True)
        executor.shutdown()
    assert critic.requests == []
    assert (result.preference, result.probability_a_better) == (B, 0.0)
    praise = next(o for o in result.rubrics if o.name == "no_initial_praise")
    assert (praise.a_violates, praise.b_violates) == (True, False)


def test_a_mandatory_violation_found_by_the_critic_overrides_its_overall_preference() -> None:
    rubrics = [Rubric("cites_source", RubricKind.TASK_SPECIFIC, "Must cite a source.", mandatory=True),
               *RUBRICS[:1]]

    def script(messages: list[dict[str, str]]) -> str:
        a, _ = shown_responses(messages)
        return json.dumps({"overall": "A", "rubrics": [{"name": "cites_source", "preference": "B",
                                                        "a_violates": a == GOOD, "b_violates": a != GOOD}]})

    with scripted_critic(script) as critic:
        comparer, executor = _comparer(critic.base_url)
        result = comparer.compare("q", [], GOOD, WEAK, rubrics, position_swap=True)
        executor.shutdown()
    assert result.preference == B
    prompt = critic.requests[0]["messages"][1]["content"]
    assert "cites_source (task_specific, MANDATORY" in prompt


def test_the_prompt_carries_the_appendix_f_rubrics_and_clips_huge_responses() -> None:
    with scripted_critic(prefers_paris) as critic:
        comparer, executor = _comparer(critic.base_url)
        comparer.compare("q", [], "x" * 200_000, WEAK, RUBRICS, position_swap=False)
        executor.shutdown()
    prompt = critic.requests[0]["messages"][1]["content"]
    for rubric in DEFAULT_RUBRICS:
        assert rubric.criterion in prompt
    assert "characters omitted" in prompt and len(prompt) < 60_000


def test_endpoint_failure_is_critic_unavailable() -> None:
    def fail(messages: list[dict[str, str]]) -> str:
        raise RuntimeError("model crashed")

    with scripted_critic(fail) as critic:
        comparer, executor = _comparer(critic.base_url)
        with pytest.raises(CriticUnavailable, match="test-critic"):
            comparer.compare("q", [], GOOD, WEAK, RUBRICS, position_swap=False)
        executor.shutdown()
