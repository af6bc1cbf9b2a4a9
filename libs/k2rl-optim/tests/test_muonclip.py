"""The MuonClip object: routing, one step() for both halves, QK-Clip after the update, stats."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from k2rl.optim import MuonClip, WSDSchedule, lr_scheduler, param_groups_for_model, parameter_role
from k2rl.optim.muon import muon_update_scale
from k2rl.optim.newton_schulz import newton_schulz
from k2rl.optim.testing import ToyModel


def _batch(seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(seed))


def _roles(opt: MuonClip) -> dict[str, str]:
    return {n: g["role"] for g in opt.param_groups for n in g["param_names"]}


def test_from_model_routes_parameters() -> None:
    model = ToyModel()
    opt = MuonClip.from_model(model)
    roles = _roles(opt)
    assert len(roles) == len(list(model.parameters()))
    for name in [
        "embed_tokens.weight",
        "lm_head.weight",
        "norm.weight",
        "layers.0.input_layernorm.weight",
        "layers.0.self_attn.q_a_layernorm.weight",
        "layers.0.mlp.gate.e_score_correction_bias",
        "layers.2.self_attn.q_proj.bias",
    ]:
        assert roles[name] == "adamw", name
    for name in [
        "layers.0.self_attn.q_b_proj.weight",
        "layers.0.self_attn.kv_a_proj_with_mqa.weight",
        "layers.0.mlp.gate.weight",
        "layers.0.mlp.experts.3.down_proj.weight",
        "layers.1.mlp.experts.gate_proj",  # 3-D expert stack
        "layers.2.self_attn.k_proj.weight",
        "layers.2.mlp.up_proj.weight",
    ]:
        assert roles[name] == "muon", name
    assert [t.kind for t in opt.qk_clip_targets] == ["mla", "mla", "gqa"]
    assert all(t.module.track_max_logits for t in opt.qk_clip_targets)


def test_role_rules() -> None:
    with pytest.raises(ValueError, match="no rule"):
        parameter_role("conv.weight", torch.zeros(2, 3, 4))
    assert parameter_role("blocks.0.experts.w1", torch.zeros(2, 3, 4)) == "muon"
    assert parameter_role("model.embed_tokens.weight", torch.zeros(5, 4)) == "adamw"
    model = nn.Sequential(nn.Linear(4, 4))
    model[0].bias.requires_grad_(False)
    (group,) = param_groups_for_model(model)
    assert group["param_names"] == ["0.weight"]
    with pytest.raises(ValueError, match="role"):
        MuonClip([{"params": [nn.Parameter(torch.zeros(2, 2))], "role": "sgd"}])
    with pytest.raises(ValueError):
        MuonClip([nn.Parameter(torch.zeros(3))])  # a bare list is all-Muon: vectors refused


def test_one_step_updates_both_halves() -> None:
    """Muon params follow Algorithm 1, AdamW params torch.optim.AdamW, in one step() call."""
    model = ToyModel()
    twin = ToyModel()
    opt = MuonClip.from_model(model, lr=0.01, weight_decay=0.1, qk_clip_tau=None)
    names = dict(model.named_parameters())
    model.loss(_batch()).backward()
    twin.loss(_batch()).backward()
    twin_params = dict(twin.named_parameters())
    ref_adamw = torch.optim.AdamW(
        [twin_params["embed_tokens.weight"], twin_params["norm.weight"]],
        lr=0.01,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        eps=1e-8,
    )
    ref_adamw.step()
    opt.step()
    w = "layers.2.mlp.down_proj.weight"
    w0, g = twin_params[w].detach(), twin_params[w].grad
    expected = (
        w0 * (1 - 0.01 * 0.1) - 0.01 * muon_update_scale(tuple(w0.shape)) * newton_schulz(g).float()
    )
    torch.testing.assert_close(names[w].detach(), expected, rtol=0, atol=1e-6)
    for n in ["embed_tokens.weight", "norm.weight"]:
        torch.testing.assert_close(names[n].detach(), twin_params[n].detach(), rtol=1e-6, atol=1e-7)


def test_experts_without_grad_are_skipped() -> None:
    model = ToyModel()
    opt = MuonClip.from_model(model, lr=0.01)
    model.loss(_batch()[:1, :3]).backward()  # 2 tokens, top-1 over 4 experts
    idle = [p for n, p in model.named_parameters() if "experts" in n and p.grad is None]
    assert idle, "the toy router should leave some expert idle on this batch"
    before = [p.detach().clone() for p in idle]
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(idle, before, strict=True))
    assert all(p not in opt.state for p in idle)


def test_clip_after_update_on_same_batch() -> None:
    """(a) through the optimizer (lr = 0 isolates the clip): recomputing the same batch's
    logits gives <= tau on every clipped head and unchanged logits elsewhere; (f) the stats."""
    model = ToyModel()
    batch = _batch(1)
    opt = MuonClip.from_model(model, lr=0.0, weight_decay=0.0)
    model.loss(batch).backward()
    s_max = {i: m.max_logits.clone() for i, m in model.attention_modules()}
    tau = float(torch.cat(list(s_max.values())).median())
    opt.qk_clip_tau = tau
    x_per_layer = _attention_inputs(model, batch)
    before = {i: m.head_logits(x_per_layer[i]).detach() for i, m in model.attention_modules()}
    opt.step()
    stats = opt.last_qk_clip_stats
    assert stats is not None
    expected_clipped = sum(int((s > tau).sum()) for s in s_max.values())
    assert 0 < stats.num_clipped == expected_clipped < stats.num_heads == 10
    assert stats.max_logit == pytest.approx(max(float(s.max()) for s in s_max.values()))
    assert stats.per_layer_num_clipped == tuple(int((s_max[i] > tau).sum()) for i in range(3))
    metrics = stats.as_metrics()
    assert metrics["qk_clip/num_clipped_heads"] == expected_clipped
    # The optimizer reset the running maxima for the next step.
    assert all(m.max_logits is None for _, m in model.attention_modules())
    # Recompute the same batch. lr = 0 keeps all but the clip-scaled weights, and the inputs of
    # layer i only change if an earlier layer was clipped, so compare layer by layer on the
    # original inputs.
    for i, m in model.attention_modules():
        after = m.head_logits(x_per_layer[i]).detach()
        for h in range(m.num_heads):
            if s_max[i][h] > tau:
                assert after[:, h].max() <= tau + 1e-4
            else:
                torch.testing.assert_close(after[:, h], before[i][:, h], rtol=1e-5, atol=1e-5)


def _attention_inputs(model: ToyModel, batch: torch.Tensor) -> dict[int, torch.Tensor]:
    """Each attention layer's input on ``batch`` (a forward that leaves the max logits alone)."""
    inputs: dict[int, torch.Tensor] = {}
    model.set_track_max_logits(False)
    hooks = [
        layer.self_attn.register_forward_pre_hook(
            lambda mod, args, i=i: inputs.__setitem__(i, args[0].detach())
        )
        for i, layer in enumerate(model.layers)
    ]
    with torch.no_grad():
        model(batch[:, :-1])
    for h in hooks:
        h.remove()
    model.set_track_max_logits(True)
    return inputs


def test_k_rope_untouched_by_clipping() -> None:
    """(e): the update moves kv_a_proj_with_mqa, but clipping adds nothing to it."""
    a, b = ToyModel(), ToyModel()
    opt_a = MuonClip.from_model(a, lr=0.02, qk_clip_tau=None)
    opt_b = MuonClip.from_model(b, lr=0.02, qk_clip_tau=1e-3)  # clips every head
    for model, opt in [(a, opt_a), (b, opt_b)]:
        model.loss(_batch()).backward()
        opt.step()
    assert opt_b.last_qk_clip_stats.num_clipped == 10
    assert opt_a.last_qk_clip_stats.num_clipped == 0
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    for layer in (0, 1):
        name = f"layers.{layer}.self_attn.kv_a_proj_with_mqa.weight"
        assert torch.equal(pa[name], pb[name])
        assert not torch.equal(
            pa[f"layers.{layer}.self_attn.kv_b_proj.weight"],
            pb[f"layers.{layer}.self_attn.kv_b_proj.weight"],
        )


def test_s_max_accumulates_over_micro_batches() -> None:
    model = ToyModel()
    opt = MuonClip.from_model(model, lr=0.0, qk_clip_tau=None)
    running = []
    alone = []
    for seed in range(3):
        model.loss(_batch(seed)).backward()
        running.append(torch.cat([m.max_logits for _, m in model.attention_modules()]).clone())
    for seed in range(3):  # each micro-batch on its own
        model.reset_max_logits()
        with torch.no_grad():
            model.loss(_batch(seed))
        alone.append(torch.cat([m.max_logits for _, m in model.attention_modules()]).clone())
    assert torch.equal(running[-1], torch.stack(alone).amax(dim=0))
    assert not torch.equal(running[-1], alone[-1])
    model.reset_max_logits()
    for seed in range(3):
        with torch.no_grad():
            model.loss(_batch(seed))
    opt.step()
    assert opt.last_qk_clip_stats.max_logit == pytest.approx(float(running[-1].max()))


def test_warns_when_no_logits_tracked() -> None:
    model = ToyModel()
    opt = MuonClip.from_model(model)
    model.set_track_max_logits(False)
    model.loss(_batch()).backward()
    with pytest.warns(UserWarning, match="track_max_logits"):
        opt.step()
    assert opt.last_qk_clip_stats.max_logit is None and opt.last_qk_clip_stats.num_clipped == 0


def test_state_dict_round_trip_continues_identically() -> None:
    a, b = ToyModel(), ToyModel()
    opt_a = MuonClip.from_model(a, lr=0.02, qk_clip_tau=1.0)
    for seed in range(2):
        a.loss(_batch(seed)).backward()
        opt_a.step()
        opt_a.zero_grad()
    b.load_state_dict(a.state_dict())
    opt_b = MuonClip.from_model(b, lr=0.02, qk_clip_tau=1.0)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # else the two share state tensors
    for model, opt in [(a, opt_a), (b, opt_b)]:
        model.loss(_batch(5)).backward()
        opt.step()
    for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q), n


def test_lr_schedule_drives_both_halves() -> None:
    model = ToyModel()
    opt = MuonClip.from_model(model, lr=0.01, qk_clip_tau=None)
    sched = lr_scheduler(opt, WSDSchedule(warmup_steps=2, stable_steps=1, decay_steps=2))
    lrs = []
    for _ in range(5):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[0] == [0.005, 0.005] and lrs[1] == [0.01, 0.01] and lrs[2] == [0.01, 0.01]
    assert lrs[3][0] == pytest.approx(0.01 * (0.1 + 0.9 * 0.5))  # halfway down the cosine
    assert lrs[4][0] == pytest.approx(0.001)  # last decay step: final_ratio * peak
