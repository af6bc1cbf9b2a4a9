"""Critic replies are parsed robustly: JSON in prose or fences, loose labels, free text,
and garbage that yields no verdict (never a made-up preference)."""

from __future__ import annotations

import pytest

from k2rl.judge.critic.parse import parse_comparison, parse_constraint
from k2rl.judge.critic.rubrics import DEFAULT_RUBRICS

RUBRICS = list(DEFAULT_RUBRICS)


@pytest.mark.parametrize(("reply", "overall"), [
    ('{"overall": "A", "confidence": 0.8}', "A"),
    ('Sure! Here you go:\n```json\n{"overall": "Response B", "rubrics": []}\n```\nHope it helps.', "B"),
    ("{'overall': 'tie'}", "tie"),  # single quotes
    ('{"overall": "A"} wait, correction: {"overall": "B"}', "B"),  # last object wins
    ('{"rubrics": [{"name": "x"}], "winner": "[[A]]"}', "A"),
    ("After weighing everything, my verdict: [[B]]", "B"),
    ("Overall winner: Response A", "A"),
    ("Response B is better because it is concise.", "B"),
    ('{"overall": "A", "text": "a \\"quoted\\" {brace}"}', "A"),  # braces inside strings
])
def test_verdicts_are_found(reply: str, overall: str) -> None:
    verdict = parse_comparison(reply, RUBRICS)
    assert verdict is not None and verdict.overall == overall


@pytest.mark.parametrize("reply", [
    "", "I like both.", "{", '{"overall": "maybe"}', "A" * 100_000, "\x00\xff garbage ½ 🤖",
    '{"overall": 1.5}', "[1, 2, 3]",
])
def test_garbage_gives_no_verdict(reply: str) -> None:
    assert parse_comparison(reply, RUBRICS) is None


def test_rubric_entries_and_confidence_are_read_and_bounded() -> None:
    reply = ('{"rubrics": [{"name": "no_initial_praise", "preference": "B", "a_violates": "true", '
             '"b_violates": false, "rationale": "A opens with praise"}, {"name": "unknown", "preference": "A"}], '
             '"overall": "B", "confidence": 97}')
    verdict = parse_comparison(reply, RUBRICS)
    assert verdict is not None
    assert verdict.confidence == pytest.approx(0.97)
    assert set(verdict.rubrics) == {"no_initial_praise"}
    assert verdict.rubrics["no_initial_praise"].a_violates is True
    low = parse_comparison('{"overall": "A", "confidence": 0.1}', RUBRICS)
    assert low is not None and low.confidence == 0.5  # a verdict is at least a coin flip


@pytest.mark.parametrize(("reply", "expected"), [
    ('{"satisfied": true, "rationale": "ok"}', True),
    ('noise {"satisfied": "no"}', False),
    ("Yes, it does.", True),
    ("No.", False),
    ("It depends on the reading of the constraint.", None),
])
def test_constraint_replies(reply: str, expected: bool | None) -> None:
    parsed = parse_constraint(reply)
    assert (parsed[0] if parsed else None) == expected
