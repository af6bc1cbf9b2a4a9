"""Pairwise outcomes -> rewards."""

from __future__ import annotations

import itertools

import pytest

from k2rl.judge.critic.ranking import PairOutcome, bradley_terry, win_rates


def _total_order(k: int) -> list[PairOutcome]:
    """Response 0 beats everyone, 1 beats all but 0, ..."""
    return [PairOutcome(i, j, 1.0) for i, j in itertools.combinations(range(k), 2)]


@pytest.mark.parametrize("rank", [win_rates, bradley_terry])
def test_a_total_order_gives_strictly_decreasing_rewards_in_unit_interval(rank) -> None:
    rewards = rank(5, _total_order(5))
    assert rewards == sorted(rewards, reverse=True) and len(set(rewards)) == 5
    assert all(0.0 <= r <= 1.0 for r in rewards)


@pytest.mark.parametrize("rank", [win_rates, bradley_terry])
def test_all_ties_give_equal_rewards(rank) -> None:
    outcomes = [PairOutcome(i, j, 0.5) for i, j in itertools.combinations(range(4), 2)]
    assert rank(4, outcomes) == pytest.approx([0.5] * 4)


def test_win_rate_counts_ties_as_half() -> None:
    assert win_rates(3, [PairOutcome(0, 1, 1.0), PairOutcome(0, 2, 0.5), PairOutcome(1, 2, 0.0)]) == \
        pytest.approx([0.75, 0.0, 0.75])


def test_bradley_terry_stays_finite_for_an_undefeated_response_and_is_symmetric() -> None:
    rewards = bradley_terry(2, [PairOutcome(0, 1, 1.0)])
    assert 0.5 < rewards[0] < 1.0
    assert rewards[0] + rewards[1] == pytest.approx(1.0)


def test_bradley_terry_uses_strength_of_schedule() -> None:
    """0 beats 1 (strong: 1 beat 2 and 3); 2 beats 3 only. Both have one more win than
    loss against their opponents in a sense win rate cannot tell apart; BT ranks 0 over 2."""
    outcomes = [PairOutcome(0, 1, 1.0), PairOutcome(1, 2, 1.0), PairOutcome(1, 3, 1.0), PairOutcome(2, 3, 1.0),
                PairOutcome(0, 2, 0.5), PairOutcome(0, 3, 0.5)]
    rewards = bradley_terry(4, outcomes)
    assert rewards[0] > rewards[2] > rewards[3]
