"""AdamW for the parameters Muon does not take (embeddings, lm_head, norms, biases, router bias).

A pure ``_foreach`` function with the exact arithmetic of ``torch.optim.AdamW`` (decoupled weight
decay ``W <- W (1 - lr wd)`` first, bias-corrected moments), so the MuonClip object can run both
halves in one ``step()`` without owning a second optimizer (tests/test_adamw.py pins it).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["adamw_step_"]


def adamw_step_(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    *,
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float,
) -> None:
    """One AdamW update of params that share ``step`` (1-based count including this update)."""
    if not params:
        return
    if step < 1:
        raise ValueError("step is 1-based")
    beta1, beta2 = betas
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    bias_correction1 = 1.0 - beta1**step
    bias_correction2_sqrt = math.sqrt(1.0 - beta2**step)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, value=-lr / bias_correction1)
