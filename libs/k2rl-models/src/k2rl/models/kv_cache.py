"""A slot-addressed KV cache that an inference engine can page.

Every layer owns a few tensors of shape ``[num_slots, *entry_shape]``; a *slot* holds one
token's entry. What a layer stores is given by the model's ``kv_cache_spec()``:

* MLA (K2 / DeepSeek-V3): ``latent`` [kv_lora_rank] (after ``kv_a_layernorm``) and
  ``k_rope`` [qk_rope_head_dim] (after RoPE): the compressed form, 576 numbers a token for
  K2 instead of 2 * 64 heads * 192/128 for expanded K/V.
* GQA (Llama / Qwen): ``k`` and ``v`` [num_key_value_heads, head_dim] (k after RoPE).

The engine decides which slot a token lives in and tells the forward through
``CacheSlots``: ``write`` (where this forward's tokens go) and ``read`` (the slots of
positions 0..L-1 of each row's sequence). A paged engine fills them from its block table
(``slot = block_table[seq, pos // block_size] * block_size + pos % block_size``);
``CacheSlots.contiguous`` is the simple one-region-per-row layout used by tests and tools.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

KVCacheSpec = Mapping[str, tuple[int, ...]]


@dataclass(frozen=True)
class CacheSlots:
    """Cache addressing for one forward over a batch of B rows with S new tokens each.

    write:     [B, S] int64 slot of each new token; -1 marks right padding (not written,
               its query row is ignored by max-logit statistics).
    read:      [B, L] int64 slots of positions 0..L-1 of each row's sequence, new tokens
               included; entries at or beyond ``read_lens[b]`` are ignored.
    read_lens: [B] int64 number of valid positions per row.
    """

    write: torch.Tensor
    read: torch.Tensor
    read_lens: torch.Tensor

    @staticmethod
    def contiguous(
        num_cached: Sequence[int],
        num_new: Sequence[int],
        max_len: int,
        device: torch.device | str = "cpu",
    ) -> tuple[torch.Tensor, CacheSlots]:
        """Row b owns slots [b * max_len, (b + 1) * max_len). Returns (position_ids, slots).

        ``num_cached[b]`` tokens of row b are already in the cache; ``num_new[b]`` arrive
        now (rows shorter than max(num_new) are right-padded).
        """
        cached = torch.as_tensor(list(num_cached), dtype=torch.int64, device=device)
        new = torch.as_tensor(list(num_new), dtype=torch.int64, device=device)
        if int((cached + new).max()) > max_len:
            raise ValueError("sequence longer than its cache region")
        batch, width = cached.shape[0], int(new.max())
        base = torch.arange(batch, device=device)[:, None] * max_len
        step = torch.arange(width, device=device)[None, :]
        position_ids = cached[:, None] + step
        write = torch.where(
            step < new[:, None], base + position_ids, torch.full_like(position_ids, -1)
        )
        read_lens = cached + new
        read = base + torch.arange(int(read_lens.max()), device=device)[None, :]
        return position_ids, CacheSlots(write=write, read=read, read_lens=read_lens)


class KVCache:
    """Per-layer slot-addressed tensors: ``layers[i][name]`` is ``[num_slots, *spec[name]]``."""

    def __init__(self, layers: Sequence[dict[str, torch.Tensor]]) -> None:
        self.layers = list(layers)

    @classmethod
    def allocate(
        cls,
        spec: KVCacheSpec,
        num_layers: int,
        num_slots: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> KVCache:
        return cls(
            [
                {
                    name: torch.zeros(num_slots, *shape, dtype=dtype, device=device)
                    for name, shape in spec.items()
                }
                for _ in range(num_layers)
            ]
        )

    @property
    def num_slots(self) -> int:
        return next(iter(self.layers[0].values())).shape[0]

    def write(self, layer: int, slots: torch.Tensor, **entries: torch.Tensor) -> None:
        """Store ``entries[name]`` [B, S, *shape] at ``slots`` [B, S]; slots < 0 are skipped."""
        keep = slots >= 0
        flat_slots = slots[keep]
        for name, value in entries.items():
            store = self.layers[layer][name]
            store[flat_slots] = value[keep].to(store.dtype)

    def read(self, layer: int, slots: torch.Tensor) -> dict[str, torch.Tensor]:
        """Entries at ``slots`` [B, L] as [B, L, *shape]; slots < 0 read slot 0 (masked later)."""
        index = slots.clamp(min=0)
        return {name: store[index] for name, store in self.layers[layer].items()}


def bytes_per_token(spec: KVCacheSpec, num_layers: int, dtype: torch.dtype) -> int:
    """Cache bytes one token costs across all layers (what an engine sizes its pool by)."""
    numel = sum(int(torch.Size(shape).numel()) for shape in spec.values())
    return numel * num_layers * torch.empty((), dtype=dtype).element_size()
