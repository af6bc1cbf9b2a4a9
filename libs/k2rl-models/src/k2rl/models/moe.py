"""Mixture of experts with DeepSeek-V3's sigmoid router and aux-loss-free balancing.

Routing (DeepSeek-V3 §2.1.2, kept by K2 §2.3): s = sigmoid(x W_r^T); experts are *chosen*
by s + b (b = ``e_score_correction_bias``), optionally first restricted to the
``topk_group`` best of ``n_group`` expert groups (a group scores the sum of its two best
biased scores; K2 uses no grouping, n_group = 1); the chosen experts are *weighted* by the
unbiased s, renormalised over the top-k when ``norm_topk_prob``, times
``routed_scaling_factor``. The bias never receives a gradient: after each step it moves by
``rate * sign(mean_load - load_e)`` (overloaded experts down, underloaded up), which is
``update_router_bias``. Experts stay separate ``nn.Linear`` modules (HF names
``experts.E.{gate,up,down}_proj``) because Muon orthogonalises each expert on its own.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from k2rl.models.config import DeepseekV3Config
from k2rl.models.mlp import GatedMLP
from k2rl.models.recompute import is_recomputing


def route(
    router_logits: torch.Tensor,
    bias: torch.Tensor,
    *,
    top_k: int,
    n_group: int,
    topk_group: int,
    norm_topk_prob: bool,
    routed_scaling_factor: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(weights [T, k] fp32, expert indices [T, k]) from router logits [T, E]."""
    scores = router_logits.float().sigmoid()
    choice = scores + bias.float()
    if n_group > 1:
        num_tokens, num_experts = choice.shape
        grouped = choice.view(num_tokens, n_group, num_experts // n_group)
        group_scores = grouped.topk(min(2, grouped.shape[-1]), dim=-1).values.sum(dim=-1)
        best_groups = group_scores.topk(topk_group, dim=-1, sorted=False).indices
        keep = torch.zeros_like(group_scores, dtype=torch.bool).scatter_(1, best_groups, True)
        choice = choice.masked_fill(
            ~keep[:, :, None].expand_as(grouped).reshape_as(choice), float("-inf")
        )
    indices = choice.topk(top_k, dim=-1, sorted=False).indices
    weights = scores.gather(1, indices)
    if norm_topk_prob:
        weights = weights / (weights.sum(dim=-1, keepdim=True) + 1e-20)
    return weights * routed_scaling_factor, indices


def balance_bias_delta(load: torch.Tensor, rate: float) -> torch.Tensor:
    """Aux-loss-free bias step: +rate for experts below the mean load, -rate above, 0 at it."""
    load = load.float()
    return rate * torch.sign(load.mean() - load)


class Router(nn.Module):
    """HF ``mlp.gate``: ``weight`` [E, hidden] and the ``e_score_correction_bias`` buffer [E]."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(config.n_routed_experts, config.hidden_size))
        # A buffer, not a Parameter: it is in state_dict (HF name) but no optimizer touches it.
        self.register_buffer("e_score_correction_bias", torch.zeros(config.n_routed_experts))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = F.linear(x.float(), self.weight.float())
        return route(
            logits,
            self.e_score_correction_bias,
            top_k=self.top_k,
            n_group=self.n_group,
            topk_group=self.topk_group,
            norm_topk_prob=self.norm_topk_prob,
            routed_scaling_factor=self.routed_scaling_factor,
        )


class MoE(nn.Module):
    """Routed experts + shared experts; records how many tokens each expert received."""

    def __init__(self, config: DeepseekV3Config) -> None:
        super().__init__()
        self.num_experts = config.n_routed_experts
        self.gate = Router(config)
        self.experts = nn.ModuleList(
            GatedMLP(config.hidden_size, config.moe_intermediate_size, config.hidden_act)
            for _ in range(config.n_routed_experts)
        )
        self.shared_experts = (
            GatedMLP(
                config.hidden_size,
                config.moe_intermediate_size * config.n_shared_experts,
                config.hidden_act,
            )
            if config.n_shared_experts
            else None
        )
        # Tokens routed to each expert since the last bias update / reset (int64 [E]).
        self.expert_load: torch.Tensor | None = None

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        shape = hidden.shape
        x = hidden.reshape(-1, shape[-1])
        weights, indices = self.gate(x)
        flat_experts = indices.reshape(-1)
        counts = torch.bincount(flat_experts, minlength=self.num_experts)
        self._record_load(counts)

        # Group the (token, slot) pairs by expert, run each expert once on its tokens.
        order = flat_experts.argsort(stable=True)
        token_of = order // indices.shape[1]
        slot_weights = weights.reshape(-1)[order]
        out = torch.zeros_like(x)
        start = 0
        for expert_idx, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            tokens = token_of[start : start + count]
            y = self.experts[expert_idx](x[tokens]) * slot_weights[start : start + count, None]
            out.index_add_(0, tokens, y.to(out.dtype))
            start += count
        out = out.view(shape)
        if self.shared_experts is not None:
            out = out + self.shared_experts(hidden)
        return out

    def _record_load(self, counts: torch.Tensor) -> None:
        if is_recomputing():  # activation checkpointing re-runs this forward in backward
            return
        counts = counts.detach()
        self.expert_load = counts if self.expert_load is None else self.expert_load + counts

    def reset_expert_load(self) -> None:
        self.expert_load = None

    @torch.no_grad()
    def update_router_bias(self, rate: float, load: torch.Tensor | None = None) -> torch.Tensor:
        """Apply one aux-loss-free balancing step and reset the recorded load.

        ``load`` overrides the recorded counts, e.g. after an all-reduce across data-parallel
        ranks (every rank must apply the same step). Returns the delta that was added.
        """
        load = self.expert_load if load is None else load
        bias = self.gate.e_score_correction_bias
        if load is None:
            return torch.zeros_like(bias)
        delta = balance_bias_delta(load.to(bias.device), rate).to(bias.dtype)
        bias.add_(delta)
        self.expert_load = None
        return delta
