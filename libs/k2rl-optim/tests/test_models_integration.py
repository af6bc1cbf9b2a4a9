"""MuonClip on the real k2rl.models architectures (K2 MLA + MoE, dense GQA, Qwen3 q/k-norm)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from k2rl.models.deepseek_v3 import DeepseekV3ForCausalLM, MLAttention
from k2rl.models.llama import GQAttention, LlamaForCausalLM
from k2rl.models.presets import get_preset
from k2rl.optim import MuonClip


def _tiny_k2() -> DeepseekV3ForCausalLM:
    cfg = dataclasses.replace(get_preset("k2-nano"), num_hidden_layers=2, n_routed_experts=4)
    torch.manual_seed(0)
    return DeepseekV3ForCausalLM(cfg)


def _tiny_llama(**overrides: object) -> LlamaForCausalLM:
    cfg = dataclasses.replace(get_preset("llama-nano"), num_hidden_layers=2, **overrides)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg)


def _batch(vocab: int = 256) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 16), generator=torch.Generator().manual_seed(0))


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    logits = model(ids[:, :-1])
    return nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())


def test_k2_parameter_roles_and_targets() -> None:
    model = _tiny_k2()
    opt = MuonClip.from_model(model)
    roles = {n: g["role"] for g in opt.param_groups for n in g["param_names"]}
    assert roles["model.embed_tokens.weight"] == "adamw"
    assert roles["lm_head.weight"] == "adamw"
    assert roles["model.norm.weight"] == "adamw"
    assert roles["model.layers.0.self_attn.kv_a_layernorm.weight"] == "adamw"
    assert roles["model.layers.1.mlp.experts.3.down_proj.weight"] == "muon"
    assert roles["model.layers.1.mlp.shared_experts.gate_proj.weight"] == "muon"
    assert roles["model.layers.1.mlp.gate.weight"] == "muon"
    assert roles["model.layers.0.self_attn.q_b_proj.weight"] == "muon"
    assert not any("e_score_correction_bias" in n for n in roles)  # a buffer in k2rl.models
    assert len(roles) == len(list(model.parameters()))
    assert [(t.layer, t.kind) for t in opt.qk_clip_targets] == [(0, "mla"), (1, "mla")]
    assert all(m.track_max_logits for _, m in model.attention_modules())


def _capture_attention_calls(model: nn.Module) -> dict[int, tuple]:
    calls: dict[int, tuple] = {}
    for i, attn in model.attention_modules():
        attn.register_forward_pre_hook(lambda mod, args, i=i: calls.setdefault(i, args))
    return calls


def _rerun(attn: nn.Module, args: tuple) -> torch.Tensor:
    attn.reset_max_logits()
    with torch.no_grad():
        attn(*args)
    return attn.max_logits.clone()


@pytest.mark.parametrize(
    "build",
    [_tiny_k2, _tiny_llama, lambda: _tiny_llama(qkv_bias=True)],
    ids=["k2-mla", "llama-gqa", "qwen2-gqa-bias"],
)
def test_clip_pins_real_attention_logits(build) -> None:
    """(a) on the real attention modules: after step() (lr = 0 isolates the clip), re-running
    each attention layer on the inputs it saw gives S_max <= tau for clipped heads and the same
    S_max for the others."""
    model = build()
    calls = _capture_attention_calls(model)
    opt = MuonClip.from_model(model, lr=0.0, weight_decay=0.0)
    _loss(model, _batch()).backward()
    s_max = {i: m.max_logits.clone() for i, m in model.attention_modules()}
    tau = float(torch.cat(list(s_max.values())).median())
    opt.qk_clip_tau = tau
    opt.step()
    assert 0 < opt.last_qk_clip_stats.num_clipped < opt.last_qk_clip_stats.num_heads
    for i, attn in model.attention_modules():
        again = _rerun(attn, calls[i])
        clipped = s_max[i] > tau
        assert torch.all(again[clipped] <= tau * (1 + 1e-4))
        assert torch.allclose(again[clipped], torch.full_like(again[clipped], tau), rtol=1e-4)
        torch.testing.assert_close(again[~clipped], s_max[i][~clipped], rtol=1e-4, atol=1e-6)


def test_qwen3_qk_norm_clips_per_layer() -> None:
    model = _tiny_llama(model_type="qwen3", qk_norm=True)
    calls = _capture_attention_calls(model)
    opt = MuonClip.from_model(model, lr=0.0, weight_decay=0.0)
    assert {t.kind for t in opt.qk_clip_targets} == {"gqa_qk_norm"}
    _loss(model, _batch()).backward()
    s_max = {i: m.max_logits.clone() for i, m in model.attention_modules()}
    tau = float(torch.cat(list(s_max.values())).median())
    opt.qk_clip_tau = tau
    opt.step()
    for i, attn in model.attention_modules():
        assert torch.all(_rerun(attn, calls[i]) <= tau * (1 + 1e-4))
    with pytest.raises(ValueError, match="q_norm"):
        MuonClip.from_model(_tiny_llama(model_type="qwen3", qk_norm=True), qk_norm_policy="error")


def test_k_rope_bit_identical_on_real_mla() -> None:
    """(e) on MLAttention: kv_a_proj_with_mqa gets the Muon update only, never a clip factor."""
    a, b = _tiny_k2(), _tiny_k2()
    opt_a = MuonClip.from_model(a, lr=0.01, qk_clip_tau=None)
    opt_b = MuonClip.from_model(b, lr=0.01, qk_clip_tau=1e-6)  # every head clips
    for model, opt in [(a, opt_a), (b, opt_b)]:
        _loss(model, _batch()).backward()
        opt.step()
    assert opt_b.last_qk_clip_stats.num_clipped == opt_b.last_qk_clip_stats.num_heads
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if "kv_a_proj_with_mqa" in name:
            assert torch.equal(pa, pb), name
        if "q_b_proj" in name or "kv_b_proj" in name:
            assert not torch.equal(pa, pb), name


def test_k2_trains_with_muonclip() -> None:
    cfg = dataclasses.replace(
        get_preset("k2-nano"),
        num_hidden_layers=2,
        n_routed_experts=4,
        hidden_size=128,
        intermediate_size=256,
    )
    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(cfg)
    opt = MuonClip.from_model(model, lr=5e-3, weight_decay=0.0)
    ids = _batch()
    losses = []
    for _ in range(6):
        loss = _loss(model, ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0] - 0.5
    assert isinstance(model.model.layers[0].self_attn, MLAttention)
    assert not isinstance(model.model.layers[0].self_attn, GQAttention)
