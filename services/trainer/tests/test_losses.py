"""The objectives against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from k2rl.trainer import losses
from k2rl.trainer.losses import IGNORE_INDEX


def test_lm_loss_sum_counts_only_targets() -> None:
    logprobs = torch.tensor([[-1.0, -2.0, -3.0, -4.0]])
    targets = torch.tensor([[5, IGNORE_INDEX, 7, IGNORE_INDEX]])
    assert losses.lm_loss_sum(logprobs, targets).item() == pytest.approx(4.0)


def test_lm_loss_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError):
        losses.lm_loss_sum(torch.zeros(3), torch.zeros(4, dtype=torch.long))


def test_sample_logprob_sums_group_by_sample_index() -> None:
    logprobs = torch.tensor([[-0.5, -1.0, -2.0, -0.25, -4.0]])
    index = torch.tensor([[-1, 0, 0, 2, -1]])
    assert losses.sample_logprob_sums(logprobs, index, 3).tolist() == [-3.0, 0.0, -0.25]


def test_group_advantages_subtract_group_mean() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 2.0, 4.0])
    groups = torch.tensor([0, 0, 0, 1, 1])
    expected = [1 - 1 / 3, -1 / 3, -1 / 3, -1.0, 1.0]
    assert losses.group_advantages(rewards, groups).tolist() == pytest.approx(expected)


def test_k15_loss_by_hand() -> None:
    # Group A: 2 samples, rewards 1 and 0 -> advantages +0.5, -0.5.
    # Group B: 1 sample, reward 3 -> advantage 0.
    lp = torch.tensor([-1.0, -2.0, -0.5])
    old = torch.tensor([-1.5, -2.0, -1.0])
    rewards = torch.tensor([1.0, 0.0, 3.0])
    groups = torch.tensor([0, 0, 1])
    tau = 0.2
    # residuals: 0.5 - 0.2*0.5 = 0.4 ; -0.5 - 0 = -0.5 ; 0 - 0.2*0.5 = -0.1
    group_a = (0.4**2 + 0.5**2) / 2
    group_b = 0.1**2
    expected = (group_a + group_b) / 2
    got = losses.k15_policy_loss(lp, old, rewards, groups, tau)
    assert got.item() == pytest.approx(expected)
    assert losses.k15_sample_weights(groups).tolist() == pytest.approx([0.25, 0.25, 0.5])


def test_k15_gradient_pushes_towards_advantage() -> None:
    # At lp == old, dL/dlp_i = -2 tau w_i A_i: a positive advantage raises log pi(y_i|x).
    lp = torch.tensor([-1.0, -1.0], requires_grad=True)
    loss = losses.k15_policy_loss(lp, lp.detach().clone(), torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), 0.5)
    loss.backward()
    # w = 1/2, A = +-0.5, tau = 0.5 -> grad = -2 * 0.5 * 0.5 * (+-0.5) = -+0.25
    assert lp.grad.tolist() == pytest.approx([-0.25, 0.25])


def test_k15_rejects_non_positive_tau() -> None:
    with pytest.raises(ValueError):
        losses.k15_terms(torch.zeros(1), torch.zeros(1), torch.zeros(1), 0.0)


def test_budget_penalties_hard_and_soft() -> None:
    got = losses.budget_penalties(
        [100, 90, 50, 95, 10],
        [100, 100, 100, 100, 0],
        [True, False, False, False, True],
        truncation_penalty=1.0,
        soft_window_tokens=20,
    )
    # truncated: 1 ; 90 in window [80, 100): (90-80)/20 ; 50 below window ; 95: 0.75 ; no budget
    assert got == pytest.approx([1.0, 0.5, 0.0, 0.75, 0.0])
    assert losses.budget_penalties([100], [100], [True], truncation_penalty=0.0) == [0.0]
    assert losses.budget_penalties([99], [100], [False], truncation_penalty=2.0) == [0.0]


def test_penalty_lowers_the_advantage_of_truncated_samples() -> None:
    rewards = torch.tensor([1.0, 1.0])
    penalties = torch.tensor(losses.budget_penalties([8, 3], [8, 8], [True, False], truncation_penalty=0.5))
    adv = losses.group_advantages(rewards - penalties, torch.tensor([0, 0]))
    assert adv.tolist() == pytest.approx([-0.25, 0.25])
    assert math.isclose(float(adv.sum()), 0.0, abs_tol=1e-12)
