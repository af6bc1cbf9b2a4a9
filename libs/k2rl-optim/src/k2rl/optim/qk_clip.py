"""QK-Clip (K2 §2.1, Algorithm 1 lines 8-19) as pure functions over weights, S_max and a head layout.

After the Muon update, for every attention head ``h`` whose max pre-softmax logit of this step's
forward ``S_max^h`` exceeds ``tau``, rescale that head's query/key projections so its logits
shrink by ``gamma_h = tau / S_max^h`` -- per head, not per layer, so heads that behave are left
bit-for-bit alone. Nothing here knows about modules, processes or optimizers: the single-process
and ZeRO-1 paths call the same functions with the (globally max-reduced) ``S_max``.

Scaling rules (``x`` the attention input; logit_h = q_h . k_h * softmax_scale):

* MHA: ``W_q^h`` and ``W_k^h`` rows (and biases) each by ``sqrt(gamma_h)``.
* MLA: head-specific ``q_C`` (nope rows of ``q_b_proj`` / ``q_proj``) and ``k_C`` (k_nope rows of
  ``kv_b_proj``) by ``sqrt(gamma_h)``; ``q_R`` (rope rows of the query) by ``gamma_h``; the rotary
  key ``k_R`` (rows ``kv_lora_rank:`` of ``kv_a_proj_with_mqa``) is shared by all heads and is
  never touched (scaling it would change every head). Both terms of
  ``q_C.k_C + q_R.k_R`` then shrink by exactly ``gamma_h``.
* GQA: one key head serves a group of query heads, so the key cannot be scaled per query head.
  Two rules, both guaranteeing that no head of the group exceeds ``tau``:

  - ``"exact"`` (default): key of group ``g`` by ``sqrt(gamma_min_g)`` (the group's smallest
    gamma), query ``h`` by ``gamma_h / sqrt(gamma_min_g)``. Every head's logits scale by exactly
    ``gamma_h`` -- the MHA semantics: clipped heads land on ``tau``, unclipped heads keep their
    logits (their query rows grow by ``1/sqrt(gamma_min_g)`` to compensate the shrunk key, so
    the network function of those heads is unchanged). With group size 1 it *is* the MHA rule.
  - ``"group_min"`` (Megatron-LM): one factor ``eta_g = gamma_min_g`` per KV group, queries by
    ``eta_g^alpha`` and the key by ``eta_g^(1-alpha)``: never increases a weight but also
    shrinks the logits of the group's unclipped (and less-exploded) heads by ``eta_g``.

* GQA with per-head ``q_norm``/``k_norm`` (Qwen3): the RMSNorm after ``q_proj``/``k_proj`` cancels
  any row scaling of ``W_q``/``W_k``, and the norm weights are shared by all heads, so per-head
  clipping is impossible. Policy ``"layer"``: scale ``q_norm.weight`` and ``k_norm.weight`` by
  ``sqrt(min_h gamma_h)`` (every head's logits shrink by the layer's smallest gamma -- no head
  exceeds ``tau``, unclipped heads are over-clipped); policy ``"error"`` refuses.

Non-finite ``S_max`` (a diverged step) is ignored rather than turned into ``gamma = 0``, which
would zero the projections; the trainer's non-finite-loss guard owns that case.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "GQAHeadLayout",
    "GQARule",
    "MLAHeadLayout",
    "gqa_clip_factors",
    "gqa_qk_clip_",
    "mla_qk_clip_",
    "qk_clip_gammas",
    "qk_norm_clip_",
    "scale_head_rows_",
]

GQARule = Literal["exact", "group_min"]


@dataclass(frozen=True)
class GQAHeadLayout:
    """Rows of ``q_proj`` are ``num_heads`` blocks of ``head_dim``; ``k_proj`` has ``num_kv_heads``.

    Query head ``h`` reads key head ``h // (num_heads // num_kv_heads)`` (HF ``repeat_kv``).
    ``num_kv_heads == num_heads`` is MHA.
    """

    num_heads: int
    num_kv_heads: int
    head_dim: int

    def __post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads {self.num_heads} not a multiple of {self.num_kv_heads}")

    @property
    def group_size(self) -> int:
        return self.num_heads // self.num_kv_heads


@dataclass(frozen=True)
class MLAHeadLayout:
    """HF DeepSeek-V3 row layout of the MLA projections.

    ``q_b_proj`` (or ``q_proj``): head ``h`` owns rows ``h*(nope+rope) : (h+1)*(nope+rope)``,
    nope first then rope. ``kv_b_proj``: head ``h`` owns ``h*(nope+v) : (h+1)*(nope+v)``, k_nope
    first then v. ``kv_a_proj_with_mqa``: ``[kv_lora_rank latent | rope key shared by all heads]``.
    """

    num_heads: int
    qk_nope_head_dim: int
    qk_rope_head_dim: int
    v_head_dim: int

    @property
    def q_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def kv_b_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.v_head_dim

    def query_nope_rows(self, head: int) -> slice:
        start = head * self.q_head_dim
        return slice(start, start + self.qk_nope_head_dim)

    def query_rope_rows(self, head: int) -> slice:
        start = head * self.q_head_dim + self.qk_nope_head_dim
        return slice(start, start + self.qk_rope_head_dim)

    def key_nope_rows(self, head: int) -> slice:
        start = head * self.kv_b_head_dim
        return slice(start, start + self.qk_nope_head_dim)

    def value_rows(self, head: int) -> slice:
        start = head * self.kv_b_head_dim + self.qk_nope_head_dim
        return slice(start, start + self.v_head_dim)

    def shared_rope_key_rows(self, kv_lora_rank: int) -> slice:
        return slice(kv_lora_rank, kv_lora_rank + self.qk_rope_head_dim)


def qk_clip_gammas(s_max: Tensor, tau: float) -> Tensor:
    """Algorithm 1 lines 11-12: ``gamma_h = tau / S_max^h`` where ``S_max^h > tau``, else 1 (fp32)."""
    if tau <= 0:
        raise ValueError("tau must be positive")
    s = s_max.float()
    clip = torch.isfinite(s) & (s > tau)
    return torch.where(clip, tau / torch.where(clip, s, torch.ones_like(s)), torch.ones_like(s))


def gqa_clip_factors(
    gammas: Tensor, num_kv_heads: int, *, rule: GQARule = "exact", alpha: float = 0.5
) -> tuple[Tensor, Tensor]:
    """Per-query-head and per-key-head multipliers whose product is ``<= gamma_h`` for every head.

    Returns ``(query_factors [num_heads], key_factors [num_kv_heads])`` in fp32; see the module
    docstring for the two rules.
    """
    num_heads = gammas.numel()
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} heads not divisible into {num_kv_heads} KV groups")
    g = gammas.float().reshape(num_kv_heads, num_heads // num_kv_heads)
    group_min = g.amin(dim=1)
    if rule == "exact":
        if g.shape[1] == 1:  # MHA: sqrt(gamma) for both, without gamma/sqrt(gamma) rounding
            root = group_min.sqrt()
            return root.clone(), root
        key = group_min.sqrt()
        query = g / key[:, None]
        return query.reshape(num_heads), key
    if rule == "group_min":
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        query = group_min.pow(alpha)[:, None].expand_as(g)
        return query.reshape(num_heads).contiguous(), group_min.pow(1.0 - alpha)
    raise ValueError(f"unknown GQA rule {rule!r}")


@torch.no_grad()
def scale_head_rows_(
    weight: Tensor,
    factors: Tensor,
    rows_per_head: int,
    *,
    row_offset: int = 0,
    row_count: int | None = None,
    bias: Tensor | None = None,
) -> None:
    """Multiply, for each head ``h``, rows ``h*rows_per_head + [row_offset, row_offset+row_count)``.

    ``weight`` is ``[num_heads * rows_per_head, in_features]`` (an ``nn.Linear`` weight). A factor
    of exactly 1 leaves its rows bit-identical. Low-precision weights are scaled in fp32 and
    rounded once.
    """
    num_heads = factors.numel()
    if weight.shape[0] != num_heads * rows_per_head:
        raise ValueError(
            f"weight has {weight.shape[0]} rows, expected {num_heads} heads x {rows_per_head}"
        )
    count = rows_per_head - row_offset if row_count is None else row_count
    rows = slice(row_offset, row_offset + count)
    targets = [weight.view(num_heads, rows_per_head, -1)[:, rows, :]]
    if bias is not None:
        targets.append(bias.view(num_heads, rows_per_head, 1)[:, rows, :])
    f = factors.to(device=weight.device, dtype=torch.float32).view(num_heads, 1, 1)
    for t in targets:
        if t.dtype in (torch.float32, torch.float64):
            t.mul_(f.to(t.dtype))
        else:
            t.copy_(t.float() * f)


@torch.no_grad()
def gqa_qk_clip_(
    q_weight: Tensor,
    k_weight: Tensor,
    gammas: Tensor,
    layout: GQAHeadLayout,
    *,
    q_bias: Tensor | None = None,
    k_bias: Tensor | None = None,
    rule: GQARule = "exact",
    alpha: float = 0.5,
) -> None:
    """Clip an MHA/GQA layer in place (``q_proj``/``k_proj`` weights and optional biases)."""
    q_factors, k_factors = gqa_clip_factors(gammas, layout.num_kv_heads, rule=rule, alpha=alpha)
    scale_head_rows_(q_weight, q_factors, layout.head_dim, bias=q_bias)
    scale_head_rows_(k_weight, k_factors, layout.head_dim, bias=k_bias)


@torch.no_grad()
def mla_qk_clip_(
    q_weight: Tensor,
    kv_b_weight: Tensor,
    gammas: Tensor,
    layout: MLAHeadLayout,
    *,
    q_bias: Tensor | None = None,
    kv_b_bias: Tensor | None = None,
) -> None:
    """Clip an MLA layer in place: q_C, k_C by ``sqrt(gamma)``, q_R by ``gamma``, k_R untouched.

    ``q_weight`` is ``q_b_proj.weight`` (or ``q_proj.weight`` when ``q_lora_rank`` is None);
    ``kv_a_proj_with_mqa`` is deliberately not an argument.
    """
    g = gammas.float()
    root = g.sqrt()
    nope, rope = layout.qk_nope_head_dim, layout.qk_rope_head_dim
    scale_head_rows_(q_weight, root, layout.q_head_dim, row_count=nope, bias=q_bias)  # q_C
    scale_head_rows_(q_weight, g, layout.q_head_dim, row_offset=nope, row_count=rope, bias=q_bias)
    scale_head_rows_(kv_b_weight, root, layout.kv_b_head_dim, row_count=nope, bias=kv_b_bias)


@torch.no_grad()
def qk_norm_clip_(q_norm_weight: Tensor, k_norm_weight: Tensor, gammas: Tensor) -> None:
    """Layer-level clip through shared q/k RMSNorm weights: both by ``sqrt(min_h gamma_h)``."""
    root = gammas.float().amin().sqrt()
    for w in (q_norm_weight, k_norm_weight):
        if w.dtype in (torch.float32, torch.float64):
            w.mul_(root.to(device=w.device, dtype=w.dtype))
        else:
            w.copy_(w.float() * root.to(w.device))
