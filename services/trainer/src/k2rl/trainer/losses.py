"""The trainer's objectives as pure functions of per-token / per-sample tensors.

Every loss here is a *sum of per-item terms with precomputed weights*, so a global batch
can be split into micro-batches (and over data-parallel ranks) and the gradients summed:
the weights carry the normalisation of the whole batch, not of a micro-batch.

* next-token loss (pretraining, SFT, PTX): mean negative log-likelihood over the target
  tokens of the *global* batch -- ``lm_loss_sum(logprobs, targets) / num_targets``;
* K1.5 policy loss (K2 §3.2.3)::

      L = E_x [ 1/K sum_i ( r(x,y_i) - mean_r(x) - tau * log(pi(y_i|x) / pi_old(y_i|x)) )^2 ]

  with log pi(y|x) the sum of the response's token log-probabilities. ``E_x`` is the mean
  over prompt groups of the batch, so sample i of a group of K in a batch of G groups has
  weight 1 / (K * G) (``k15_sample_weights``);
* budget control (K2 §3.2.3): a penalty subtracted from the reward of responses that hit
  their token budget, optionally ramped in over a soft window before it (``budget_penalties``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE_INDEX = -100


def lm_loss_sum(token_logprobs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Sum of -log p(target) over target positions (``targets != IGNORE_INDEX``).

    ``token_logprobs`` and ``targets`` have the same shape; ignored positions contribute
    nothing whatever their log-probability.
    """
    if token_logprobs.shape != targets.shape:
        raise ValueError(f"logprobs {tuple(token_logprobs.shape)} and targets {tuple(targets.shape)} differ")
    valid = targets != IGNORE_INDEX
    return -(token_logprobs * valid).sum()


def sample_logprob_sums(
    token_logprobs: torch.Tensor, sample_index: torch.Tensor, num_samples: int
) -> torch.Tensor:
    """log pi(y_i|x) for each sample: token log-probabilities summed by ``sample_index``.

    ``sample_index`` has the shape of ``token_logprobs`` and names, for every position, the
    sample whose response token it predicts, or -1 for positions outside any response
    (prompts, tool outputs, padding). Returns [num_samples] in the logprobs' dtype.
    """
    flat_lp = token_logprobs.reshape(-1)
    flat_ix = sample_index.reshape(-1)
    keep = flat_ix >= 0
    sums = torch.zeros(num_samples, dtype=flat_lp.dtype, device=flat_lp.device)
    return sums.index_add(0, flat_ix[keep], flat_lp[keep])


def group_advantages(rewards: torch.Tensor, group_index: torch.Tensor) -> torch.Tensor:
    """r_i - mean_r(x_i): each reward minus the mean reward of its prompt group."""
    num_groups = int(group_index.max()) + 1 if group_index.numel() else 0
    totals = torch.zeros(num_groups, dtype=rewards.dtype, device=rewards.device).index_add(0, group_index, rewards)
    counts = torch.bincount(group_index, minlength=num_groups).to(rewards.dtype)
    return rewards - (totals / counts)[group_index]


def k15_sample_weights(group_index: torch.Tensor) -> torch.Tensor:
    """1 / (K_g * G) per sample: mean over the K_g samples of a group, then over G groups."""
    counts = torch.bincount(group_index)
    num_groups = int((counts > 0).sum())
    return 1.0 / (counts[group_index].to(torch.float64) * num_groups)


def k15_terms(
    logprob_sums: torch.Tensor, old_logprob_sums: torch.Tensor, advantages: torch.Tensor, tau: float
) -> torch.Tensor:
    """(A_i - tau * (log pi(y_i|x) - log pi_old(y_i|x)))^2 per sample."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    residual = advantages - tau * (logprob_sums - old_logprob_sums)
    return residual.square()


def k15_policy_loss(
    logprob_sums: torch.Tensor,
    old_logprob_sums: torch.Tensor,
    rewards: torch.Tensor,
    group_index: torch.Tensor,
    tau: float,
) -> torch.Tensor:
    """The K1.5 loss of a whole batch (the form the engine computes micro-batch by micro-batch)."""
    advantages = group_advantages(rewards, group_index)
    weights = k15_sample_weights(group_index).to(logprob_sums.dtype)
    return (weights * k15_terms(logprob_sums, old_logprob_sums, advantages.to(logprob_sums.dtype), tau)).sum()


def budget_penalties(
    response_lengths: Sequence[int],
    token_budgets: Sequence[int],
    truncated: Sequence[bool],
    *,
    truncation_penalty: float,
    soft_window_tokens: int = 0,
) -> list[float]:
    """Penalty to subtract from each sample's reward (K2 §3.2.3 budget control).

    A response truncated at its budget (``truncated``, budget > 0) loses the full
    ``truncation_penalty``. With a soft window W, an untruncated response of length L in
    the last W tokens before its budget B loses ``truncation_penalty * (L - (B - W)) / W``.
    Budget 0 means no budget: no penalty.
    """
    if truncation_penalty < 0 or soft_window_tokens < 0:
        raise ValueError("truncation_penalty and soft_window_tokens must be >= 0")
    penalties = []
    for length, budget, cut in zip(response_lengths, token_budgets, truncated, strict=True):
        if budget <= 0 or truncation_penalty == 0:
            penalties.append(0.0)
        elif cut:
            penalties.append(truncation_penalty)
        elif soft_window_tokens > 0 and length > budget - soft_window_tokens:
            over = min(length, budget) - (budget - soft_window_tokens)
            penalties.append(truncation_penalty * over / soft_window_tokens)
        else:
            penalties.append(0.0)
    return penalties
