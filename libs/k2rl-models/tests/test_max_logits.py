"""Per-head max pre-softmax logit (K2 §2.1 S_max^h) against a brute-force computation.

The reference recomputes every head's logits q_i . k_j * softmax_scale from the
attention module's weights with its own, deliberately plain code (per-head loop, complex
rotation for RoPE) and maxes over the pairs the mask allows.
"""

from __future__ import annotations

import pytest
import torch

from k2rl.models import CacheSlots
from k2rl.models.deepseek_v3 import MLAttention
from k2rl.models.llama import GQAttention
from k2rl.models.rope import rope_frequencies


def _rotate(
    x: torch.Tensor, positions: torch.Tensor, attn_config, interleaved: bool
) -> torch.Tensor:
    """RoPE as complex multiplication: x [B, S, ..., D] at positions [B, S]."""
    rope, dim = attn_config
    inv_freq, factor = rope_frequencies(rope.rope, dim, rope.max_position_embeddings)
    angles = positions.double()[..., None] * inv_freq.double()  # [B, S, D/2]
    rot = torch.polar(torch.full_like(angles, factor), angles)
    while rot.dim() < x.dim():
        rot = rot.unsqueeze(2)
    xd = x.double()
    if interleaved:
        z = torch.view_as_complex(xd.reshape(*x.shape[:-1], -1, 2).contiguous())
        return torch.view_as_real(z * rot).flatten(-2)
    half = x.shape[-1] // 2
    z = torch.complex(xd[..., :half], xd[..., half:])
    out = z * rot
    return torch.cat((out.real, out.imag), dim=-1)


def reference_logits(model, attn, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """All pre-softmax logits [B, H, S, S] of ``attn`` for its input ``x`` (fp64)."""
    cfg = model.config
    batch, seq, _ = x.shape
    if isinstance(attn, MLAttention):
        q = (
            attn.q_proj(x)
            if attn.q_lora_rank is None
            else attn.q_b_proj(attn.q_a_layernorm(attn.q_a_proj(x)))
        )
        q = q.view(batch, seq, attn.num_heads, attn.qk_nope_head_dim + attn.qk_rope_head_dim)
        kv_a = attn.kv_a_proj_with_mqa(x)
        latent = attn.kv_a_layernorm(kv_a[..., : attn.kv_lora_rank])
        kv = attn.kv_b_proj(latent).view(batch, seq, attn.num_heads, -1)
        spec = (cfg, attn.qk_rope_head_dim)
        q_rope = _rotate(q[..., attn.qk_nope_head_dim :], positions, spec, attn.rope_interleave)
        k_rope = _rotate(kv_a[..., attn.kv_lora_rank :], positions, spec, attn.rope_interleave)
        out = torch.empty(batch, attn.num_heads, seq, seq, dtype=torch.float64)
        for h in range(attn.num_heads):
            nope = q[:, :, h, : attn.qk_nope_head_dim].double() @ kv[
                :, :, h, : attn.qk_nope_head_dim
            ].double().transpose(1, 2)
            rope = q_rope[:, :, h] @ k_rope.transpose(1, 2)
            out[:, h] = (nope + rope) * attn.softmax_scale
        return out
    assert isinstance(attn, GQAttention)
    q = attn.q_proj(x).view(batch, seq, attn.num_heads, attn.head_dim)
    k = attn.k_proj(x).view(batch, seq, attn.num_key_value_heads, attn.head_dim)
    if attn.qk_norm:
        q, k = attn.q_norm(q), attn.k_norm(k)
    spec = (cfg, attn.head_dim)
    q, k = _rotate(q, positions, spec, False), _rotate(k, positions, spec, False)
    group = attn.num_heads // attn.num_key_value_heads
    out = torch.empty(batch, attn.num_heads, seq, seq, dtype=torch.float64)
    for h in range(attn.num_heads):
        out[:, h] = q[:, :, h] @ k[:, :, h // group].transpose(1, 2) * attn.softmax_scale
    return out


def capture_attention_inputs(model):
    inputs: dict[int, torch.Tensor] = {}
    handles = [
        attn.register_forward_pre_hook(
            lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach())
        )
        for i, attn in model.attention_modules()
    ]
    return inputs, handles


def allowed_pairs(document_ids: torch.Tensor) -> torch.Tensor:
    seq = document_ids.shape[-1]
    causal = torch.ones(seq, seq, dtype=torch.bool).tril()
    same = document_ids[:, :, None] == document_ids[:, None, :]
    real = (document_ids >= 0)[:, :, None] & (document_ids >= 0)[:, None, :]
    return (causal & same & real)[:, None]


def brute_force_max(model, input_ids, positions, document_ids) -> dict[int, torch.Tensor]:
    inputs, handles = capture_attention_inputs(model)
    with torch.no_grad():
        model(input_ids, positions, document_ids=document_ids)
        result = {}
        for i, attn in model.attention_modules():
            logits = reference_logits(model, attn, inputs[i], positions)
            masked = logits.masked_fill(~allowed_pairs(document_ids), float("-inf"))
            result[i] = masked.amax(dim=(0, 2, 3)).float()
            # The mask must matter for this test to mean anything.
            assert (logits.amax(dim=(0, 2, 3)).float() > result[i] + 1e-4).any()
    for h in handles:
        h.remove()
    return result


def _packed_batch(vocab: int):
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, vocab, (2, 20), generator=g)
    # row 0: three packed documents; row 1: one document then 4 padding tokens
    document_ids = torch.tensor([[0] * 7 + [1] * 5 + [2] * 8, [0] * 16 + [-1] * 4])
    positions = torch.cat(
        [
            torch.cat([torch.arange(7), torch.arange(5), torch.arange(8)])[None],
            torch.arange(20)[None],
        ]
    )
    return input_ids, positions, document_ids


def test_max_logits_equal_brute_force_with_packing_and_padding(tiny_model):
    input_ids, positions, document_ids = _packed_batch(tiny_model.config.vocab_size)
    expected = brute_force_max(tiny_model, input_ids, positions, document_ids)

    tiny_model.set_track_max_logits(True)
    with torch.no_grad():
        tiny_model(input_ids, positions, document_ids=document_ids)
    for i, attn in tiny_model.attention_modules():
        assert attn.max_logits.dtype == torch.float32
        assert attn.max_logits.shape == (attn.num_heads,)
        torch.testing.assert_close(attn.max_logits, expected[i], atol=1e-4, rtol=1e-5)


def test_max_logits_are_a_running_max_until_reset(tiny_model):
    input_ids, positions, document_ids = _packed_batch(tiny_model.config.vocab_size)
    other = torch.randint(
        0, tiny_model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(9)
    )
    first = brute_force_max(tiny_model, input_ids, positions, document_ids)
    second = brute_force_max(
        tiny_model, other, torch.arange(20)[None], torch.zeros(1, 20, dtype=torch.long)
    )

    assert all(attn.max_logits is None for _, attn in tiny_model.attention_modules())
    with torch.no_grad():
        tiny_model(input_ids, positions, document_ids=document_ids)  # tracking off
    assert tiny_model.max_logits() == {}

    tiny_model.set_track_max_logits(True)
    with torch.no_grad():
        tiny_model(input_ids, positions, document_ids=document_ids)
        tiny_model(other)
    for i, attn in tiny_model.attention_modules():
        torch.testing.assert_close(
            attn.max_logits, torch.maximum(first[i], second[i]), atol=1e-4, rtol=1e-5
        )
        assert not attn.max_logits.requires_grad
    assert sorted(tiny_model.max_logits()) == [i for i, _ in tiny_model.attention_modules()]

    tiny_model.reset_max_logits()
    assert all(attn.max_logits is None for _, attn in tiny_model.attention_modules())


def test_tracking_does_not_change_outputs_or_gradients(tiny_model):
    input_ids, positions, document_ids = _packed_batch(tiny_model.config.vocab_size)
    tiny_model.train()

    def run():
        tiny_model.zero_grad()
        logits = tiny_model(input_ids, positions, document_ids=document_ids)
        logits.square().mean().backward()
        return logits.detach(), {
            n: p.grad.clone() for n, p in tiny_model.named_parameters() if p.grad is not None
        }

    plain_logits, plain_grads = run()
    tiny_model.set_track_max_logits(True)
    tracked_logits, tracked_grads = run()
    torch.testing.assert_close(tracked_logits, plain_logits, atol=1e-5, rtol=1e-5)
    assert plain_grads.keys() == tracked_grads.keys()
    for name in plain_grads:
        torch.testing.assert_close(tracked_grads[name], plain_grads[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("decode_steps", [1, 3])
def test_prefill_plus_decode_max_equals_full_sequence_max(tiny_model, decode_steps):
    """The (query, key) pairs of prefill + decode are exactly those of one causal forward."""
    vocab, total = tiny_model.config.vocab_size, 16
    input_ids = torch.randint(0, vocab, (2, total), generator=torch.Generator().manual_seed(5))
    tiny_model.set_track_max_logits(True)
    with torch.no_grad():
        tiny_model(input_ids)
    full = tiny_model.max_logits()
    tiny_model.reset_max_logits()

    cache = tiny_model.allocate_kv_cache(num_slots=2 * total)
    prefill = total - decode_steps
    with torch.no_grad():
        positions, slots = CacheSlots.contiguous([0, 0], [prefill, prefill], total)
        tiny_model(input_ids[:, :prefill], positions, kv_cache=cache, cache_slots=slots)
        for step in range(prefill, total):
            positions, slots = CacheSlots.contiguous([step, step], [1, 1], total)
            tiny_model(input_ids[:, step : step + 1], positions, kv_cache=cache, cache_slots=slots)
    for i, value in tiny_model.max_logits().items():
        torch.testing.assert_close(value, full[i], atol=1e-4, rtol=1e-5)
