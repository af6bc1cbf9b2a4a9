"""Tool-use checkpoints against a trajectory's calls and final state."""

from __future__ import annotations

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verifiers.tool_use import decode_call, parse_checkpoint, parse_state, verify

CALLS = [
    decode_call("search_flights", '{"from": "PEK", "to": "SFO", "date": "2025-07-01"}'),
    decode_call("book_flight", '{"flight": "CA985", "seats": 1}'),
    decode_call("send_email", "{not json"),  # model-written garbage
]


@pytest.mark.parametrize(("checkpoints", "passed_checks"), [
    ([("search_flights", '{"to": "SFO"}', False, False)], [True]),
    ([("search_flights", '{"to": "LAX"}', False, False)], [False]),
    ([("book_flight", "", True, False), ("search_flights", "", True, False)], [True, False]),  # order matters
    ([("search_flights", "", True, False), ("book_flight", '{"seats": 1}', True, False)], [True, True]),
    ([("cancel_booking", "", False, True)], [True]),  # forbidden and not called
    ([("book_flight", "", False, True)], [False]),  # forbidden but called
    ([("send_email", "", False, False)], [False]),  # invalid JSON arguments never match
])
def test_checkpoints(checkpoints: list[tuple], passed_checks: list[bool]) -> None:
    verdict = verify([parse_checkpoint(*c) for c in checkpoints], {}, CALLS, {})
    assert [c.passed for c in verdict.checks] == passed_checks
    assert verdict.reward == pytest.approx(sum(passed_checks) / len(passed_checks))


def test_final_state_is_compared_as_json() -> None:
    expected = parse_state({"booked": "true", "seats": "[1, 2]"}, "f")
    good = verify([], expected, [], {"booked": "true", "seats": "[1,2]"})
    bad = verify([], expected, [], {"booked": "false"})
    assert good.passed and good.reward == 1.0
    assert [c.passed for c in bad.checks] == [False, False]


def test_malformed_references_are_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        parse_checkpoint("", "{}", False, False)
    with pytest.raises(InvalidArgument):
        parse_checkpoint("x", "[1]", False, False)
    with pytest.raises(InvalidArgument):
        parse_state({"k": "not json"}, "f")
    with pytest.raises(InvalidArgument):
        verify([], {}, CALLS, {})
