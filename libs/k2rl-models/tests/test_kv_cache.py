"""Prefill + decode through the external KV cache equals one full forward."""

from __future__ import annotations

import pytest
import torch

from k2rl.models import CacheSlots, KVCache, deepseek_v3
from k2rl.models.kv_cache import bytes_per_token
from k2rl.models.testing import tiny_model as make_tiny_model

ATOL = 2e-5


def _full_logits(model, rows: list[torch.Tensor]) -> list[torch.Tensor]:
    with torch.no_grad():
        return [model(row[None])[0] for row in rows]


def test_cache_stores_the_compressed_latent_for_mla_and_kv_for_gqa():
    mla, gqa = make_tiny_model("mla"), make_tiny_model("gqa")
    assert mla.kv_cache_spec() == {"latent": (16,), "k_rope": (8,)}
    assert gqa.kv_cache_spec() == {"k": (2, 16), "v": (2, 16)}
    cache = mla.allocate_kv_cache(num_slots=10)
    assert len(cache.layers) == mla.config.num_hidden_layers
    assert cache.layers[0]["latent"].shape == (10, 16)
    assert bytes_per_token(mla.kv_cache_spec(), 3, torch.bfloat16) == (16 + 8) * 3 * 2


def test_ragged_prefill_then_decode_matches_full_forward(tiny_model):
    vocab, max_len = tiny_model.config.vocab_size, 24
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(0, vocab, (n,), generator=g) for n in (14, 19)]
    prompt_lens = [5, 11]
    expected = _full_logits(tiny_model, rows)

    cache = tiny_model.allocate_kv_cache(num_slots=2 * max_len)
    prompts = torch.zeros(2, max(prompt_lens), dtype=torch.long)
    for b, n in enumerate(prompt_lens):
        prompts[b, :n] = rows[b][:n]
    with torch.no_grad():
        positions, slots = CacheSlots.contiguous([0, 0], prompt_lens, max_len)
        logits = tiny_model(prompts, positions, kv_cache=cache, cache_slots=slots)
    for b, n in enumerate(prompt_lens):
        torch.testing.assert_close(logits[b, :n], expected[b][:n], atol=ATOL, rtol=0)

    # decode one token a step per row until each row is exhausted (rows finish at different steps)
    lengths = list(prompt_lens)
    while any(n < len(row) for n, row in zip(lengths, rows, strict=True)):
        active = [b for b in range(2) if lengths[b] < len(rows[b])]
        tokens = torch.stack([rows[b][lengths[b]] for b in active])[:, None]
        region = torch.tensor(active)[:, None] * max_len  # row b keeps its own cache region
        lens = torch.tensor([lengths[b] for b in active])
        slots = CacheSlots(
            write=region + lens[:, None],
            read=region + torch.arange(int(lens.max()) + 1)[None],
            read_lens=lens + 1,
        )
        with torch.no_grad():
            logits = tiny_model(tokens, lens[:, None], kv_cache=cache, cache_slots=slots)
        for i, b in enumerate(active):
            torch.testing.assert_close(logits[i, 0], expected[b][lengths[b]], atol=ATOL, rtol=0)
            lengths[b] += 1


def test_paged_slots_give_the_same_logits_as_contiguous(tiny_model):
    """Tokens scattered over the slot pool in random order (a paged engine's view)."""
    vocab, total, prefill = tiny_model.config.vocab_size, 12, 8
    tokens = torch.randint(0, vocab, (2, total), generator=torch.Generator().manual_seed(1))
    expected = _full_logits(tiny_model, list(tokens))
    slot_of = torch.randperm(64, generator=torch.Generator().manual_seed(2))[: 2 * total].view(
        2, total
    )
    cache = tiny_model.allocate_kv_cache(num_slots=64)
    with torch.no_grad():
        slots = CacheSlots(
            write=slot_of[:, :prefill],
            read=slot_of[:, :prefill],
            read_lens=torch.tensor([prefill] * 2),
        )
        tiny_model(
            tokens[:, :prefill],
            torch.arange(prefill)[None].expand(2, -1),
            kv_cache=cache,
            cache_slots=slots,
        )
        for pos in range(prefill, total):
            slots = CacheSlots(
                write=slot_of[:, pos : pos + 1],
                read=slot_of[:, : pos + 1],
                read_lens=torch.tensor([pos + 1] * 2),
            )
            logits = tiny_model(
                tokens[:, pos : pos + 1], torch.full((2, 1), pos), kv_cache=cache, cache_slots=slots
            )
            for b in range(2):
                torch.testing.assert_close(logits[b, 0], expected[b][pos], atol=ATOL, rtol=0)


@pytest.mark.parametrize("absorb_max_query_len", [0, 64])
def test_mla_absorbed_and_expanded_cache_paths_agree(monkeypatch, absorb_max_query_len):
    """Force every cached forward through one evaluation order; each must match the full one."""
    monkeypatch.setattr(deepseek_v3, "ABSORB_MAX_QUERY_LEN", absorb_max_query_len)
    model = make_tiny_model("mla", q_lora_rank=None)
    tokens = torch.randint(0, 96, (2, 10), generator=torch.Generator().manual_seed(4))
    expected = model(tokens).detach()
    cache = model.allocate_kv_cache(num_slots=20)
    with torch.no_grad():
        positions, slots = CacheSlots.contiguous([0, 0], [6, 6], 10)
        first = model(tokens[:, :6], positions, kv_cache=cache, cache_slots=slots)
        positions, slots = CacheSlots.contiguous([6, 6], [4, 4], 10)
        rest = model(tokens[:, 6:], positions, kv_cache=cache, cache_slots=slots)
    torch.testing.assert_close(torch.cat([first, rest], dim=1), expected, atol=ATOL, rtol=0)


def test_cache_write_skips_padding_slots():
    cache = KVCache.allocate({"x": (2,)}, num_layers=1, num_slots=4)
    cache.write(0, torch.tensor([[1, -1]]), x=torch.ones(1, 2, 2))
    assert cache.layers[0]["x"].sum() == 2 and cache.layers[0]["x"][1].tolist() == [1.0, 1.0]
    with pytest.raises(ValueError):
        CacheSlots.contiguous([3], [2], max_len=4)
