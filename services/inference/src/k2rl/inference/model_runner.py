"""Turns a scheduled batch into one model forward over the paged KV cache.

Rows are right-padded to the longest row of the step (padding writes nowhere: slot -1).
Each row reads positions 0..L-1 of its own sequence through its block table, which is the
``CacheSlots`` contract of ``k2rl.models.kv_cache``; only the last real position of each
row goes through the LM head.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq

import torch

from k2rl.inference.sequence import Sequence
from k2rl.models import CacheSlots, CausalLM, KVCache


def _padded(rows: Seq[Seq[int]], fill: int, device: torch.device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out.to(device)


def slots_of(block_tables: torch.Tensor, positions: torch.Tensor, block_size: int) -> torch.Tensor:
    """Cache slot of each position [B, S] given block tables [B, max_blocks]."""
    blocks = block_tables.gather(1, torch.div(positions, block_size, rounding_mode="floor"))
    return blocks * block_size + positions % block_size


class ModelRunner:
    def __init__(self, model: CausalLM, block_size: int) -> None:
        self.model = model
        self.block_size = block_size

    @property
    def device(self) -> torch.device:
        return self.model.lm_head.weight.device

    @torch.inference_mode()
    def forward(self, sequences: Seq[Sequence], kv_cache: KVCache) -> torch.Tensor:
        """Computes every uncomputed token of each sequence; returns next-token logits [B, V].

        Prefill rows bring all their uncached tokens, decode rows their last sampled one;
        both are the same operation: tokens ``num_computed_tokens .. num_tokens - 1``.
        """
        device = self.device
        starts = [s.num_computed_tokens for s in sequences]
        new_lens = [s.num_tokens - s.num_computed_tokens for s in sequences]
        input_ids = _padded([s.token_ids[s.num_computed_tokens :] for s in sequences], 0, device)
        width = input_ids.shape[1]
        step = torch.arange(width, device=device)[None, :]
        start_t = torch.as_tensor(starts, dtype=torch.long, device=device)[:, None]
        len_t = torch.as_tensor(new_lens, dtype=torch.long, device=device)[:, None]
        valid = step < len_t
        positions = torch.where(valid, start_t + step, torch.zeros_like(step))
        tables = _padded([s.block_table for s in sequences], 0, device)
        write = torch.where(valid, slots_of(tables, positions, self.block_size), torch.full_like(positions, -1))
        read_lens = (start_t + len_t).squeeze(1)
        read_pos = torch.arange(int(read_lens.max()), device=device)[None, :].expand(len(sequences), -1)
        read_pos = torch.minimum(read_pos, (read_lens - 1)[:, None])  # beyond read_lens: masked anyway
        read = slots_of(tables, read_pos, self.block_size)
        slots = CacheSlots(write=write, read=read, read_lens=read_lens)
        hidden = self.model.hidden_states(input_ids, positions, kv_cache=kv_cache, cache_slots=slots)
        last = hidden[torch.arange(len(sequences), device=device), len_t.squeeze(1) - 1]
        for seq in sequences:
            seq.num_computed_tokens = seq.num_tokens
        return self.model.compute_logits(last).float()
