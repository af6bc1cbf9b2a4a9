"""Scaled dot-product attention with the per-head max logit of K2 §2.1, in one pass.

QK-Clip needs S_max^h = max over the batch of the pre-softmax logits of head h
(softmax_scale * q_i . k_j, masked pairs excluded, padding query rows left out). Backends
(``ATTENTION_BACKENDS``, chosen per attention module, ``CausalLM.set_attention_backend``):

* ``eager``: attention from the materialised [B, H, Sq, Sk] logits, whose max is taken on
  the way to the softmax (one reduction over a tensor the softmax reads anyway);
* ``sdpa``: torch's fused SDPA; it never exposes the logits, so it cannot track the max;
* ``flex``: torch's flex_attention with a block-sparse mask (``flex.py``); compiled on
  CUDA it returns each query row's max score from the fused kernel, so nothing
  [Sq, Sk]-sized is materialised. torch refuses those row maxima on CPU, where flex only
  serves untracked forwards (without backward);
* ``auto`` (default): SDPA when not tracking; when tracking, flex on CUDA, eager elsewhere.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from k2rl.models.context import AttentionMask
from k2rl.models.flex import flex_dot_product_attention

ATTENTION_BACKENDS = ("auto", "eager", "sdpa", "flex")


def check_attention_backend(backend: str) -> str:
    if backend not in ATTENTION_BACKENDS:
        raise ValueError(f"attention backend {backend!r} is not one of {ATTENTION_BACKENDS}")
    return backend


def resolve_attention_backend(backend: str, device: torch.device, *, track_max: bool) -> str:
    """The concrete backend (eager / sdpa / flex) that ``backend`` means for this forward."""
    check_attention_backend(backend)
    if backend == "auto":
        if not track_max:
            return "sdpa"
        return "flex" if device.type == "cuda" else "eager"
    if backend == "sdpa" and track_max:
        raise ValueError(
            "the sdpa attention backend cannot report per-head max logits; "
            "use 'auto', 'eager' or 'flex' while tracking them"
        )
    return backend


def masked_head_max(logits: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
    """Per-head max [H] (fp32) of masked logits [B, H, Sq, Sk] over batch, queries and keys.

    Query rows that are padding (``mask.query_valid`` False) are left out.
    """
    return mask.head_max(logits.detach().amax(dim=-1))


def masked_softmax(
    logits: torch.Tensor, mask: AttentionMask, dtype: torch.dtype, *, track_max: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """softmax over keys of logits [B, H, Sq, Sk] with disallowed pairs removed.

    Returns the probabilities (in ``dtype``) and, if ``track_max``, the per-head max logit
    [H], read off the same masked logits the softmax consumes. The mask is added as a
    0 / -inf bias: its backward is the identity, where masked_fill's is another pass.
    """
    logits = logits + mask.additive_bias(logits.dtype)
    head_max = masked_head_max(logits, mask) if track_max else None
    return torch.softmax(logits, dim=-1, dtype=torch.float32).to(dtype), head_max


def dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: AttentionMask,
    scale: float,
    *,
    track_max: bool,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Grouped-query attention: query [B, Hq, Sq, D], key [B, Hk, Sk, D], value [B, Hk, Sk, Dv].

    Query head h reads key/value head h // (Hq / Hk) (HF ``repeat_kv`` order). Returns the
    output [B, Hq, Sq, Dv] and the per-head max logit [Hq] when ``track_max``.
    """
    resolved = resolve_attention_backend(backend, query.device, track_max=track_max)
    if resolved == "flex":
        return flex_dot_product_attention(query, key, value, mask, scale, track_max=track_max)
    if resolved == "sdpa":
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=None if mask.is_causal else mask.allowed,
            is_causal=mask.is_causal,
            scale=scale,
            enable_gqa=query.shape[1] != key.shape[1],
        )
        return out, None
    return eager_dot_product_attention(query, key, value, mask, scale, track_max=track_max)


def eager_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: AttentionMask,
    scale: float,
    *,
    track_max: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``dot_product_attention`` from the materialised logits."""
    batch, q_heads, q_len, head_dim = query.shape
    kv_heads, k_len = key.shape[1], key.shape[2]
    # Fold the query heads sharing a key/value head into the row dimension, so one 4-D
    # matmul serves the group without repeating K/V: [B, Hk, group * Sq, D]. Scaling q
    # (not the logits) saves a pass over the [Sq, Sk] logits.
    group = q_heads // kv_heads
    q = (query * scale).reshape(batch, kv_heads, group * q_len, head_dim)
    logits = (q @ key.transpose(-1, -2)).view(batch, q_heads, q_len, k_len)
    probs, head_max = masked_softmax(logits, mask, value.dtype, track_max=track_max)
    out = probs.view(batch, kv_heads, group * q_len, k_len) @ value
    return out.view(batch, q_heads, q_len, value.shape[-1]), head_max


class MaxLogitTracker:
    """Running per-head max of the pre-softmax logits (K2 §2.1 S_max^h), for QK-Clip.

    Mixed into attention modules. ``max_logits`` is a detached fp32 [num_heads] tensor
    holding the max over every forward since ``reset_max_logits()`` (micro-batches of one
    optimizer step accumulate), or None when nothing was recorded.
    """

    track_max_logits: bool
    max_logits: torch.Tensor | None
    attention_backend: str  # one of ATTENTION_BACKENDS

    def _init_max_logit_tracking(self) -> None:
        self.track_max_logits = False
        self.max_logits = None
        self.attention_backend = "auto"

    def reset_max_logits(self) -> None:
        self.max_logits = None

    def _record_max_logits(self, head_max: torch.Tensor | None) -> None:
        if head_max is None:
            return
        head_max = head_max.detach().float()
        self.max_logits = (
            head_max if self.max_logits is None else torch.maximum(self.max_logits, head_max)
        )
