"""Attention through torch's flex_attention, with the per-head max logit from the kernel.

On CUDA, compiled flex_attention is one fused, block-sparse kernel that can also return
each query row's max score (``AuxRequest(max_scores=True)``): the max over the keys the
mask allows of ``scale * q . k``, i.e. exactly the row maxima the eager path reads off its
materialised logits. ``AttentionMask.head_max`` reduces them to S_max^h the same way for
both paths (padding query rows left out).

The ``BlockMask`` comes from the mask's own predicate (``AttentionMask.allows``: causal,
packed documents, key and query padding, cached context), so it admits exactly the pairs
of ``AttentionMask.allowed``, which this path never builds. It is built once per mask and
shared by every layer.

Shapes: GQA uses flex_attention's ``enable_gqa`` (query head h reads key/value head
h // group, HF ``repeat_kv`` order); MLA's value head dim may differ from its query/key
head dim, which flex_attention accepts (its kernels round both up to powers of two).
The scale is passed through unchanged (MLA's includes the YaRN mscale correction).

On CPU, torch runs flex_attention unfused (it materialises the scores), without backward
and without max scores; the CPU tests use it to check outputs and masks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch.nn.attention.flex_attention import (
    AuxRequest,
    BlockMask,
    create_block_mask,
    flex_attention,
)

from k2rl.models.context import AttentionMask


@functools.cache
def _compiled_flex_attention() -> Callable[..., Any]:
    return torch.compile(flex_attention)


@functools.cache
def _compiled_create_block_mask() -> Callable[..., BlockMask]:
    # Compiled, the mask_mod is evaluated block by block instead of on a dense
    # [B, Sq, Sk] grid of index tensors.
    return torch.compile(create_block_mask)


def mask_mod(mask: AttentionMask) -> Callable[..., torch.Tensor]:
    """flex_attention's (batch, head, q_idx, kv_idx) -> bool form of the mask's predicate."""
    allows = mask.allows

    def allowed(
        b: torch.Tensor, h: torch.Tensor, q_idx: torch.Tensor, kv_idx: torch.Tensor
    ) -> torch.Tensor:
        return allows(b, q_idx, kv_idx)

    return allowed


def block_mask(mask: AttentionMask) -> BlockMask:
    """The ``BlockMask`` of ``mask`` (heads broadcast), built once per mask."""

    def build() -> BlockMask:
        batch, q_len, k_len = mask.shape
        device = mask.device
        create = _compiled_create_block_mask() if device.type == "cuda" else create_block_mask
        return create(mask_mod(mask), batch, None, q_len, k_len, device=device)

    return mask.derived("flex_block_mask", build)


def flex_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    mask: AttentionMask,
    scale: float,
    *,
    track_max: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``attention.dot_product_attention`` contract: output [B, Hq, Sq, Dv], max [Hq] or None."""
    attend = _compiled_flex_attention() if query.device.type == "cuda" else flex_attention
    kwargs: dict[str, Any] = {
        "block_mask": block_mask(mask),
        "scale": scale,
        "enable_gqa": query.shape[1] != key.shape[1],
    }
    if not track_max:
        return attend(query, key, value, **kwargs), None
    out, aux = attend(query, key, value, return_aux=AuxRequest(max_scores=True), **kwargs)
    return out, mask.head_max(aux.max_scores)
