"""RoPE variants: frequencies vs transformers' own init functions, K2's YaRN mscale."""

from __future__ import annotations

import math

import pytest
import torch

from k2rl.models import get_preset, to_hf_config
from k2rl.models.config import LlamaConfig, RopeConfig
from k2rl.models.rope import apply_rotary, rope_frequencies, yarn_softmax_scale


def test_k2_yarn_puts_the_whole_temperature_on_the_softmax_scale():
    k2 = get_preset("kimi-k2")
    _, attention_factor = rope_frequencies(k2.rope, k2.qk_rope_head_dim, k2.max_position_embeddings)
    assert attention_factor == 1.0  # mscale == mscale_all_dim
    mscale = 0.1 * math.log(32.0) + 1.0
    assert yarn_softmax_scale(k2.rope, 192) == pytest.approx(192**-0.5 * mscale**2)
    assert yarn_softmax_scale(RopeConfig(), 192) == 192**-0.5


@pytest.mark.parametrize("preset", ["kimi-k2", "deepseek-v3"])
def test_yarn_frequencies_match_transformers(preset):
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = get_preset(preset)
    hf_config = transformers.DeepseekV3Config(**to_hf_config(config))
    inv_freq, factor = rope_frequencies(
        config.rope, config.qk_rope_head_dim, config.max_position_embeddings
    )
    hf_inv_freq, hf_factor = ROPE_INIT_FUNCTIONS["yarn"](hf_config, "cpu")
    torch.testing.assert_close(inv_freq, hf_inv_freq, atol=0, rtol=1e-6)
    assert factor == pytest.approx(hf_factor)


def test_llama3_frequencies_match_transformers():
    transformers = pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    rope = RopeConfig(
        theta=500000.0, type="llama3", factor=8.0, original_max_position_embeddings=8192
    )
    config = LlamaConfig(
        hidden_size=4096, num_attention_heads=32, num_key_value_heads=8, head_dim=128, rope=rope
    )
    from k2rl.models import to_hf_config as dump

    hf_inv_freq, _ = ROPE_INIT_FUNCTIONS["llama3"](transformers.LlamaConfig(**dump(config)), "cpu")
    torch.testing.assert_close(rope_frequencies(rope, 128, 4096)[0], hf_inv_freq, atol=0, rtol=1e-6)


def test_interleaved_and_half_layouts_rotate_the_same_pairs():
    """Permuting interleaved pairs into halves turns one layout into the other."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 3, 2, 8, generator=g)
    angles = torch.randn(1, 3, 4, generator=g)
    cos, sin = angles.cos(), angles.sin()
    perm = torch.cat([torch.arange(0, 8, 2), torch.arange(1, 8, 2)])
    interleaved = apply_rotary(x, cos, sin, interleaved=True)
    half = apply_rotary(x[..., perm], cos, sin, interleaved=False)
    torch.testing.assert_close(interleaved[..., perm], half)
    # a rotation preserves norms
    torch.testing.assert_close(interleaved.norm(dim=-1), x.norm(dim=-1))
