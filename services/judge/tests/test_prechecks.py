"""Deterministic prescriptive pre-checks (Appendix F.2), table-driven."""

from __future__ import annotations

import pytest

from k2rl.judge.critic.prechecks import explicit_justification, initial_praise


@pytest.mark.parametrize(("response", "caught"), [
    ("Great question! Photosynthesis converts light...", True),
    ("What a fascinating question. The answer is...", True),
    ("That's a really insightful point; here is why...", True),
    ("Excellent! Let's begin.", True),
    ("I love this question. So...", True),
    ("**Good question!** The capital is Paris.", True),
    ("Photosynthesis converts light into chemical energy.", False),
    ("Great Britain consists of three countries.", False),  # 'Great' not praising the user
    ("The question of free will is old. Philosophers...", False),
    ("The answer is great: 42.", False),
])
def test_initial_praise(response: str, caught: bool) -> None:
    assert (initial_praise(response) is not None) is caught


@pytest.mark.parametrize(("response", "caught"), [
    ("Paris is the capital. This response is concise and directly answers your question.", True),
    ("Steps: 1, 2, 3. My answer fully addresses your request.", True),
    ("I've kept the answer short to respect your time.", True),
    ("This answer describes the three branches of government.", False),  # describing content
    ("The response of the immune system is fast.", False),
])
def test_explicit_justification(response: str, caught: bool) -> None:
    assert (explicit_justification(response) is not None) is caught
