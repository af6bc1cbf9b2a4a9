"""What each token may attend to, built once per forward and shared by every layer.

Three cases, one representation (``AttentionMask``: a predicate "may query q of row b see
key k", the boolean [B, 1, Sq, Sk] "allowed" matrix evaluated from it on demand, and which
query rows are real tokens). Eager attention and SDPA read the matrix; flex_attention turns
the same predicate into a block-sparse ``BlockMask`` (``flex.py``), so they cannot disagree:

* training, one sequence a row: causal;
* training, packed rows: causal *within* a document. Documents come from explicit
  ``document_ids``, from ``cu_seqlens`` (flash-attn style, one packed row), or from
  ``position_ids`` restarting at 0. ``document_ids < 0`` marks padding: such a token sees
  only itself (so softmax stays finite) and is excluded from max-logit statistics;
* prefill / decode with a KV cache: key j of row b is position j of its sequence; a query
  at position p sees keys j <= p that are in the cache (j < read_lens[b]).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from k2rl.models.kv_cache import CacheSlots, KVCache

# (batch, query index, key index) -> may the query see the key? Called with broadcastable
# index tensors (whole grids for ``allowed``, scalars under flex_attention's vmap).
MaskPredicate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionMask:
    allows: MaskPredicate
    shape: tuple[int, int, int]  # (B, Sq, Sk)
    device: torch.device
    query_valid: torch.Tensor | None = None  # bool [B, Sq]; None: every query row is real
    is_causal: bool = False  # ``allowed`` is exactly lower-triangular (fused kernels can skip it)
    _derived: dict[object, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def allowed(self) -> torch.Tensor:
        """bool [B, 1, Sq, Sk]: ``allows`` on every pair, built on first use.

        Eager attention and masked SDPA need it; causal SDPA and flex_attention do not, so
        at long context nothing [Sq, Sk]-sized is built for them.
        """

        def build() -> torch.Tensor:
            batch, q_len, k_len = self.shape
            b = torch.arange(batch, device=self.device)[:, None, None]
            q = torch.arange(q_len, device=self.device)[None, :, None]
            k = torch.arange(k_len, device=self.device)[None, None, :]
            return self.allows(b, q, k).expand(batch, q_len, k_len)[:, None]

        return self.derived("allowed", build)

    def derived(self, key: object, build: Callable[[], Any]) -> Any:
        """``build()`` once per mask (hence once per forward), shared by every layer."""
        if key not in self._derived:
            self._derived[key] = build()
        return self._derived[key]

    def additive_bias(self, dtype: torch.dtype) -> torch.Tensor:
        """0 where allowed, else -inf [B, 1, Sq, Sk]."""

        def build() -> torch.Tensor:
            zero = torch.zeros((), dtype=dtype, device=self.device)
            return torch.where(self.allowed, zero, float("-inf"))

        return self.derived(("additive_bias", dtype), build)

    def head_max(self, row_max: torch.Tensor) -> torch.Tensor:
        """Per-head max [H] (fp32) of per-query-row maxima [B, H, Sq], padding rows left out."""
        row_max = row_max.detach()
        if self.query_valid is not None:
            row_max = row_max.masked_fill(~self.query_valid[:, None, :], float("-inf"))
        return row_max.amax(dim=(0, 2)).float()


@dataclass
class ForwardContext:
    position_ids: torch.Tensor  # [B, S] int64, absolute positions (RoPE)
    mask: AttentionMask
    kv_cache: KVCache | None = None
    slots: CacheSlots | None = None
    rope: tuple[torch.Tensor, torch.Tensor] | None = (
        None  # cos, sin [B, S, rope_dim/2]; set by the model
    )


def documents_from_positions(position_ids: torch.Tensor) -> torch.Tensor:
    """A new document starts wherever the position restarts at 0."""
    return torch.cumsum((position_ids == 0).to(torch.int64), dim=-1)


def packed_positions(cu_seqlens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(position_ids [1, T], document_ids [1, T]) for documents packed back to back.

    ``cu_seqlens`` = [0, len_0, len_0 + len_1, ..., T] as in flash-attn's varlen API.
    """
    cu = cu_seqlens.to(torch.int64)
    total = int(cu[-1])
    index = torch.arange(total, device=cu.device)
    document_ids = torch.searchsorted(cu[1:], index, right=True)
    position_ids = index - cu[document_ids]
    return position_ids[None], document_ids[None]


def document_causal_mask(document_ids: torch.Tensor) -> AttentionMask:
    """Causal mask restricted to equal document ids; negative ids are padding.

    A padding query sees only itself (its softmax stays finite); real queries never see
    padding keys, whose id (< 0) matches no document.
    """

    def allows(b: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        query_doc = document_ids[b, q]
        same_doc_causal = (query_doc == document_ids[b, k]) & (k <= q)
        return torch.where(query_doc < 0, q == k, same_doc_causal)

    batch, seq_len = document_ids.shape
    shape, device = (batch, seq_len, seq_len), document_ids.device
    is_pad = document_ids < 0
    if bool(is_pad.any()):
        return AttentionMask(allows, shape, device, query_valid=~is_pad)
    single_document = bool((document_ids == document_ids[:, :1]).all())
    return AttentionMask(allows, shape, device, is_causal=single_document)


def cached_mask(position_ids: torch.Tensor, slots: CacheSlots) -> AttentionMask:
    """Mask over the cached context: key j (position j) is visible to a query at position p >= j."""
    read_lens = slots.read_lens

    def allows(b: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return (k <= position_ids[b, q]) & (k < read_lens[b])

    shape = (position_ids.shape[0], position_ids.shape[1], slots.read.shape[-1])
    query_valid = slots.write >= 0
    return AttentionMask(
        allows,
        shape,
        position_ids.device,
        query_valid=None if bool(query_valid.all()) else query_valid,
    )


def build_context(
    input_ids: torch.Tensor,
    position_ids: torch.Tensor | None = None,
    *,
    attention_mask: torch.Tensor | None = None,
    document_ids: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    kv_cache: KVCache | None = None,
    cache_slots: CacheSlots | None = None,
) -> ForwardContext:
    """Resolve the ways callers describe a batch into one ``ForwardContext``.

    ``attention_mask`` is the HF-style [B, S] 0/1 padding mask (left or right padding);
    padded tokens become document -1 and, when ``position_ids`` is not given, real tokens
    are numbered from 0 as HF does.
    """
    batch, seq_len = input_ids.shape
    device = input_ids.device
    if kv_cache is not None or cache_slots is not None:
        if kv_cache is None or cache_slots is None or position_ids is None:
            raise ValueError("cached forward needs kv_cache, cache_slots and position_ids")
        return ForwardContext(
            position_ids, cached_mask(position_ids, cache_slots), kv_cache, cache_slots
        )

    if cu_seqlens is not None:
        if batch != 1:
            raise ValueError("cu_seqlens describes one packed row; input_ids must be [1, T]")
        packed_pos, packed_docs = packed_positions(cu_seqlens.to(device))
        if packed_pos.shape[-1] != seq_len:
            raise ValueError("cu_seqlens[-1] must equal the packed length")
        position_ids = packed_pos if position_ids is None else position_ids
        document_ids = packed_docs if document_ids is None else document_ids

    if attention_mask is not None:
        real = attention_mask.to(torch.bool)
        if position_ids is None:
            position_ids = (torch.cumsum(real.to(torch.int64), dim=-1) - 1).clamp(min=0)
        base_docs = documents_from_positions(position_ids) if document_ids is None else document_ids
        document_ids = torch.where(real, base_docs, torch.full_like(base_docs, -1))

    if position_ids is None:
        position_ids = torch.arange(seq_len, device=device)[None].expand(batch, seq_len)
    elif position_ids.dim() == 1:
        position_ids = position_ids[None].expand(batch, seq_len)
    if document_ids is None:
        document_ids = documents_from_positions(position_ids)
    return ForwardContext(position_ids, document_causal_mask(document_ids))
