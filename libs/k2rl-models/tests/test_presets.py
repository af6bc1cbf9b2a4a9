"""Presets: sizes (incl. K2 report Table 2), meta-device builds, and k2-nano learns."""

from __future__ import annotations

import pytest
import torch

from k2rl.models import build_model, get_preset, load_model, parameter_counts, preset_names
from k2rl.models.deepseek_v3 import DeepseekV3ForCausalLM, MLAttention
from k2rl.models.testing import tiny_gqa, tiny_mla


def test_k2_nano_has_the_k2_shape_at_a_few_million_parameters():
    config = get_preset("k2-nano")
    counts = parameter_counts(config)
    assert 2e6 < counts.total < 10e6
    assert (
        config.q_lora_rank is not None and config.n_group == 1 and config.first_k_dense_replace == 1
    )
    assert config.n_shared_experts == 1 and config.num_hidden_layers > config.first_k_dense_replace
    model = load_model("k2-nano")
    assert isinstance(model, DeepseekV3ForCausalLM)
    assert isinstance(model.model.layers[0].self_attn, MLAttention)
    assert sum(p.numel() for p in model.parameters()) == counts.total
    assert 10e6 < parameter_counts(get_preset("k2-micro")).total < 100e6


@pytest.mark.parametrize(
    "config",
    [
        tiny_mla(),
        tiny_mla(q_lora_rank=None, attention_bias=True),
        tiny_gqa(),
        tiny_gqa(model_type="qwen2", qkv_bias=True, qk_norm=False),
    ],
)
def test_parameter_counts_match_built_models(config):
    model = build_model(config, device="meta")
    assert sum(p.numel() for p in model.parameters()) == parameter_counts(config).total


def test_full_size_presets_reproduce_the_report_sizes():
    """K2 report Table 2: DeepSeek-V3 671B total / 37B activated; K2 32.6B activated.

    Counting embeddings and head, the released configs give 670.9B / 37.5B and
    1.026T / 32.9B: K2 states 1.04T total (~1.3% more; the released checkpoint has no MTP
    layer) and 32.6B activated (~0.8% less), so K2 is checked to 2% and 1%.
    """
    v3, k2 = parameter_counts(get_preset("deepseek-v3")), parameter_counts(get_preset("kimi-k2"))
    assert v3.total == pytest.approx(671e9, rel=0.002)
    assert v3.activated == pytest.approx(37e9, rel=0.02)
    assert k2.total == pytest.approx(1.04e12, rel=0.02)
    assert k2.activated == pytest.approx(32.6e9, rel=0.01)


def test_every_preset_builds():
    for name in preset_names():
        config = get_preset(name)
        if config.num_hidden_layers > 8:
            continue  # full-size: covered by the analytic count above
        model = load_model(name)
        assert model(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, config.vocab_size)


def test_k2_nano_learns_a_repetitive_text_in_a_few_steps():
    torch.manual_seed(0)
    model = load_model("k2-nano").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    data = torch.tensor(list(b"the quick brown fox jumps over the lazy dog. " * 20))
    losses = []
    for _ in range(8):
        starts = torch.randint(0, len(data) - 49, (4,))
        batch = torch.stack([data[s : s + 49] for s in starts])
        loss = -model.token_logprobs(batch[:, :-1], batch[:, 1:]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_router_biases(rate=1e-3)
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
