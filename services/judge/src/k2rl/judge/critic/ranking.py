"""Pairwise outcomes -> one reward per response: win rate or Bradley-Terry strength."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairOutcome:
    i: int
    j: int
    probability_i_better: float  # 1 win, 0 loss, 0.5 tie


def win_rates(k: int, outcomes: Sequence[PairOutcome]) -> list[float]:
    """Mean probability of winning over each response's comparisons (ties count 1/2)."""
    wins, games = [0.0] * k, [0] * k
    for o in outcomes:
        wins[o.i] += o.probability_i_better
        wins[o.j] += 1.0 - o.probability_i_better
        games[o.i] += 1
        games[o.j] += 1
    return [w / g if g else 0.5 for w, g in zip(wins, games, strict=True)]


def bradley_terry(k: int, outcomes: Sequence[PairOutcome], prior_ties: float = 0.5,
                  iterations: int = 200, tolerance: float = 1e-9) -> list[float]:
    """Rewards from Bradley-Terry strengths fitted by Hunter's MM algorithm.

    Soft outcomes are fractional wins. ``prior_ties`` virtual ties between every pair keep
    strengths finite when a response wins everything (and shrink small samples toward
    equal). Reward_i = mean over j != i of P(i beats j) = s_i / (s_i + s_j), in (0, 1).
    """
    if k == 1:
        return [0.5]
    wins = [[0.0] * k for _ in range(k)]
    games = [[0.0] * k for _ in range(k)]
    for i in range(k):
        for j in range(k):
            if i != j:
                wins[i][j] += prior_ties / 2
                games[i][j] += prior_ties
    for o in outcomes:
        wins[o.i][o.j] += o.probability_i_better
        wins[o.j][o.i] += 1.0 - o.probability_i_better
        games[o.i][o.j] += 1
        games[o.j][o.i] += 1
    strength = [1.0] * k
    for _ in range(iterations):
        updated = []
        for i in range(k):
            denominator = sum((games[i][j] + games[j][i]) / 2 / (strength[i] + strength[j]) for j in range(k) if j != i)
            updated.append(sum(wins[i]) / denominator if denominator else strength[i])
        geometric_mean = 1.0
        for s in updated:
            geometric_mean *= s ** (1 / k)
        updated = [s / geometric_mean for s in updated]
        converged = max(abs(a - b) for a, b in zip(updated, strength, strict=True)) < tolerance
        strength = updated
        if converged:
            break
    return [sum(strength[i] / (strength[i] + strength[j]) for j in range(k) if j != i) / (k - 1) for i in range(k)]
