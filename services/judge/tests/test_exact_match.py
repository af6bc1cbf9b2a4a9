"""Exact-match verifier, table-driven."""

from __future__ import annotations

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verifiers.exact_match import verify


@pytest.mark.parametrize(("accepted", "case_sensitive", "response", "passes"), [
    (["B"], False, "Reasoning...\nThe answer is (B).", True),
    (["B"], False, r"\boxed{b}", True),
    (["B"], True, r"\boxed{b}", False),
    (["Paris", "Paris, France"], False, "Answer: paris", True),
    (["Ｐａｒｉｓ"], False, "Answer: Paris", True),  # full-width reference
    (["42"], False, "Answer: 421", False),  # close but wrong
    (["B"], False, "", False),
])
def test_exact_match(accepted: list[str], case_sensitive: bool, response: str, passes: bool) -> None:
    assert verify(accepted, case_sensitive, response).passed is passes


def test_no_accepted_answer_is_invalid() -> None:
    with pytest.raises(InvalidArgument):
        verify(["  "], False, "x")
