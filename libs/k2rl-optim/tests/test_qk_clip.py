"""QK-Clip as pure functions: pinning tests (a), (d), (e) and the GQA / q-k-norm rules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from k2rl.optim.qk_clip import (
    GQAHeadLayout,
    MLAHeadLayout,
    gqa_clip_factors,
    gqa_qk_clip_,
    mla_qk_clip_,
    qk_clip_gammas,
    scale_head_rows_,
)
from k2rl.optim.targets import QKClipTarget, find_qk_clip_targets
from k2rl.optim.testing import ToyGQAttention, ToyMLAttention

TOL = 1e-4


def _target(module: nn.Module, **kw) -> QKClipTarget:
    (target,) = find_qk_clip_targets(nn.ModuleList([module]), **kw)
    return target


def _inputs(hidden: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, 10, hidden, generator=torch.Generator().manual_seed(seed)) * 2.0


def _head_max(logits: torch.Tensor) -> torch.Tensor:
    return logits.amax(dim=(0, 2, 3))


def _clip_at_median(module: nn.Module, x: torch.Tensor, **kw) -> tuple[torch.Tensor, ...]:
    """Clip with tau between the heads' S_max so some heads clip and some do not."""
    with torch.no_grad():
        before = module.head_logits(x)
        s_max = _head_max(before)
        tau = float(s_max.sort().values[len(s_max) // 2 - 1 : len(s_max) // 2 + 1].mean())
        gammas = qk_clip_gammas(s_max, tau)
        _target(module).clip_(gammas, **kw)
        after = module.head_logits(x)
    clipped = gammas < 1
    assert clipped.any() and (~clipped).any()
    return before, after, s_max, gammas, torch.tensor(tau)


def test_gammas() -> None:
    s = torch.tensor([50.0, 100.0, 250.0, float("inf"), float("nan"), float("-inf")])
    g = qk_clip_gammas(s, 100.0)
    assert g.tolist()[:3] == [1.0, 1.0, pytest.approx(0.4)]
    assert g[3:].tolist() == [1.0, 1.0, 1.0]  # non-finite S_max: no clip, never gamma = 0
    with pytest.raises(ValueError):
        qk_clip_gammas(s, 0.0)


@pytest.mark.parametrize("q_lora_rank", [16, None])
def test_mla_clip_pins_logits(q_lora_rank: int | None) -> None:
    """(a) for MLA: clipped heads' max logit == tau, unclipped heads' logits bit-identical."""
    torch.manual_seed(0)
    attn = ToyMLAttention(32, 6, q_lora_rank=q_lora_rank)
    k_rope_weight = attn.kv_a_proj_with_mqa.weight.detach().clone()
    before, after, s_max, gammas, tau = _clip_at_median(attn, _inputs(32))
    for h in range(6):
        if gammas[h] < 1:
            assert after[:, h].max() <= tau + TOL
            assert after[:, h].max() == pytest.approx(float(tau), rel=1e-5)
            torch.testing.assert_close(after[:, h], before[:, h] * gammas[h], rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(after[:, h], before[:, h])
    # (e): the shared rotary key k_R is untouched, bit for bit.
    assert torch.equal(attn.kv_a_proj_with_mqa.weight, k_rope_weight)


def test_mla_rows_follow_hf_layout() -> None:
    """(d): the row slices are HF's view(num_heads, nope+rope) / view(num_heads, nope+v) splits."""
    layout = MLAHeadLayout(num_heads=3, qk_nope_head_dim=4, qk_rope_head_dim=2, v_head_dim=5)
    rows_q = torch.arange(3 * 6).float()
    q_nope, q_rope = rows_q.view(3, 6).split([4, 2], dim=-1)  # as HF DeepseekV3Attention does
    rows_kv = torch.arange(3 * 9).float()
    k_nope, v = rows_kv.view(3, 9).split([4, 5], dim=-1)
    for h in range(3):
        assert torch.equal(rows_q[layout.query_nope_rows(h)], q_nope[h])
        assert torch.equal(rows_q[layout.query_rope_rows(h)], q_rope[h])
        assert torch.equal(rows_kv[layout.key_nope_rows(h)], k_nope[h])
        assert torch.equal(rows_kv[layout.value_rows(h)], v[h])
    assert layout.shared_rope_key_rows(kv_lora_rank=16) == slice(16, 18)

    # And the scaling touches exactly those rows by exactly those factors.
    w_q, w_kv = torch.ones(18, 7), torch.ones(27, 7)
    gammas = torch.tensor([1.0, 0.25, 0.64])
    mla_qk_clip_(w_q, w_kv, gammas, layout)
    for h, g in enumerate(gammas.tolist()):
        assert torch.all(w_q[layout.query_nope_rows(h)] == g**0.5)
        assert torch.all(w_q[layout.query_rope_rows(h)] == g)
        assert torch.all(w_kv[layout.key_nope_rows(h)] == g**0.5)
        assert torch.all(w_kv[layout.value_rows(h)] == 1.0)


def test_mla_clip_against_transformers_deepseek_v3() -> None:
    """(d) end to end on HF's own DeepseekV3Attention (with real RoPE): per-head logits scale by gamma."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import (
        DeepseekV3Attention,
        DeepseekV3RotaryEmbedding,
    )

    cfg = transformers.DeepseekV3Config(
        hidden_size=32,
        num_attention_heads=4,
        num_key_value_heads=4,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_nope_head_dim=8,
        qk_rope_head_dim=4,
        v_head_dim=8,
        vocab_size=10,
        num_hidden_layers=1,
        attn_implementation="eager",
    )
    torch.manual_seed(0)
    attn = DeepseekV3Attention(cfg, 0).eval()
    x = torch.randn(2, 6, 32)
    pe = DeepseekV3RotaryEmbedding(cfg)(x, torch.arange(6)[None].expand(2, -1))
    layout = MLAHeadLayout(4, cfg.qk_nope_head_dim, cfg.qk_rope_head_dim, cfg.v_head_dim)
    gammas = torch.tensor([1.0, 0.5, 0.2, 1.0])
    k_rope = attn.kv_a_proj_with_mqa.weight.detach().clone()
    with torch.no_grad():
        log_p0 = attn(x, pe, None)[1].log()
        mla_qk_clip_(attn.q_b_proj.weight, attn.kv_b_proj.weight, gammas, layout)
        log_p1 = attn(x, pe, None)[1].log()
    # log p_j - log p_0 = s_j - s_0: the logit differences of head h must scale by gamma_h.
    d0, d1 = log_p0 - log_p0[..., :1], log_p1 - log_p1[..., :1]
    for h, g in enumerate(gammas.tolist()):
        torch.testing.assert_close(d1[:, h], d0[:, h] * g, rtol=1e-4, atol=1e-5)
    assert torch.equal(attn.kv_a_proj_with_mqa.weight, k_rope)


@pytest.mark.parametrize("bias", [False, True])
def test_mha_clip_pins_logits(bias: bool) -> None:
    """(a) for MHA (num_kv_heads == num_heads), with Qwen2-style q/k biases too."""
    torch.manual_seed(1)
    attn = ToyGQAttention(32, 6, 6, bias=bias)
    if bias:
        nn.init.normal_(attn.q_proj.bias, std=0.5)
        nn.init.normal_(attn.k_proj.bias, std=0.5)
    before, after, _, gammas, tau = _clip_at_median(attn, _inputs(32, seed=1))
    for h in range(6):
        if gammas[h] < 1:
            assert after[:, h].max() == pytest.approx(float(tau), rel=1e-5)
        else:
            assert torch.equal(after[:, h], before[:, h])


def test_gqa_exact_rule_pins_logits() -> None:
    """(a) for GQA, rule "exact": every head scales by exactly its own gamma."""
    torch.manual_seed(2)
    attn = ToyGQAttention(32, 8, 2, bias=True)
    nn.init.normal_(attn.k_proj.bias, std=0.5)
    before, after, _, gammas, tau = _clip_at_median(attn, _inputs(32, seed=2), gqa_rule="exact")
    group_min = gammas.view(2, 4).amin(dim=1).repeat_interleave(4)
    assert torch.any((gammas == 1) & (group_min < 1))  # an unclipped head shares a clipped key
    for h in range(8):
        assert after[:, h].max() <= tau + TOL
        if gammas[h] < 1:
            assert after[:, h].max() == pytest.approx(float(tau), rel=1e-5)
        else:  # same logits (to rounding) even if its shared key was shrunk
            torch.testing.assert_close(after[:, h], before[:, h], rtol=1e-5, atol=1e-5)


def test_gqa_group_min_rule_never_exceeds_tau() -> None:
    torch.manual_seed(3)
    attn = ToyGQAttention(32, 8, 2)
    before, after, _, gammas, tau = _clip_at_median(attn, _inputs(32, seed=3), gqa_rule="group_min")
    group_min = gammas.view(2, 4).amin(dim=1)
    for h in range(8):
        assert after[:, h].max() <= tau + TOL
        torch.testing.assert_close(
            after[:, h], before[:, h] * group_min[h // 4], rtol=1e-5, atol=1e-5
        )


@pytest.mark.parametrize("rule", ["exact", "group_min"])
def test_gqa_factor_rules_never_let_a_head_exceed_tau(rule: str) -> None:
    gen = torch.Generator().manual_seed(4)
    for _ in range(200):
        kv = int(torch.randint(1, 5, (1,), generator=gen))
        heads = kv * int(torch.randint(1, 5, (1,), generator=gen))
        s_max = torch.rand(heads, generator=gen) * 400.0
        gammas = qk_clip_gammas(s_max, 100.0)
        q, k = gqa_clip_factors(gammas, kv, rule=rule)  # type: ignore[arg-type]
        effective = q * k.repeat_interleave(heads // kv)
        assert torch.all(effective <= gammas * (1 + 1e-6))  # S_max * effective <= tau
        if rule == "exact":
            torch.testing.assert_close(effective, gammas, rtol=1e-6, atol=0)
        for g in range(kv):  # a group with no clipped head is not touched at all
            members = slice(g * heads // kv, (g + 1) * heads // kv)
            if torch.all(gammas[members] == 1):
                assert torch.all(q[members] == 1) and k[g] == 1


def test_qk_norm_layer_policy_and_refusal() -> None:
    """Qwen3 q/k-norm: W_q/W_k scaling would be cancelled, so the shared norm weights are scaled."""
    torch.manual_seed(5)
    attn = ToyGQAttention(32, 4, 2, qk_norm=True)
    nn.init.normal_(attn.q_norm.weight, mean=3.0, std=0.5)
    before, after, s_max, gammas, tau = _clip_at_median(attn, _inputs(32, seed=5))
    assert torch.all(_head_max(after) <= tau + TOL)
    torch.testing.assert_close(after, before * gammas.min(), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="q_norm"):
        _target(ToyGQAttention(32, 4, 2, qk_norm=True), qk_norm_policy="error")


def test_low_precision_weights_scaled_in_fp32() -> None:
    w = torch.full((4, 3), 1.7, dtype=torch.bfloat16)
    scale_head_rows_(w, torch.tensor([0.3, 1.0]), 2)
    assert torch.equal(w[:2], torch.full((2, 3), 1.7 * 0.3).bfloat16())
    assert torch.equal(w[2:], torch.full((2, 3), 1.7, dtype=torch.bfloat16))


def test_layout_checks() -> None:
    with pytest.raises(ValueError):
        GQAHeadLayout(num_heads=6, num_kv_heads=4, head_dim=8)
    with pytest.raises(ValueError):
        gqa_qk_clip_(torch.ones(16, 4), torch.ones(8, 4), torch.ones(3), GQAHeadLayout(4, 2, 4))
    with pytest.raises(ValueError):
        gqa_clip_factors(torch.ones(4), 2, rule="bogus")  # type: ignore[arg-type]
