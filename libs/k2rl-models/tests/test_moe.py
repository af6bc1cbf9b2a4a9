"""Sigmoid router with bias-corrected selection, grouping, load counts, aux-loss-free balancing."""

from __future__ import annotations

import itertools

import torch

from k2rl.models.moe import balance_bias_delta, route
from k2rl.models.testing import tiny_model


def _brute_force_route(logits, bias, top_k, n_group, topk_group, norm, scale):
    """Enumerate every admissible expert set; pick the one with the largest biased score."""
    scores = logits.sigmoid()
    choice = scores + bias
    num_experts = logits.shape[-1]
    per_group = num_experts // n_group
    weights, indices = [], []
    for t in range(logits.shape[0]):
        group_score = [
            choice[t, g * per_group : (g + 1) * per_group].topk(min(2, per_group)).values.sum()
            for g in range(n_group)
        ]
        groups = sorted(range(n_group), key=lambda g: -group_score[g])[:topk_group]
        allowed = [e for e in range(num_experts) if e // per_group in groups]
        best = max(
            itertools.combinations(allowed, top_k), key=lambda s: sum(choice[t, e] for e in s)
        )
        w = scores[t, list(best)]
        if norm:
            w = w / w.sum()
        indices.append(sorted(best))
        weights.append({e: float(x) * scale for e, x in zip(best, w, strict=True)})
    return weights, indices


def test_route_matches_brute_force_with_groups_and_bias():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 8, generator=g)
    bias = torch.randn(8, generator=g) * 0.5
    for n_group, topk_group, norm in [(1, 1, True), (4, 2, True), (2, 1, False)]:
        weights, indices = route(
            logits,
            bias,
            top_k=3 if n_group != 2 else 2,
            n_group=n_group,
            topk_group=topk_group,
            norm_topk_prob=norm,
            routed_scaling_factor=2.5,
        )
        ref_w, ref_i = _brute_force_route(
            logits, bias, 3 if n_group != 2 else 2, n_group, topk_group, norm, 2.5
        )
        for t in range(12):
            assert sorted(indices[t].tolist()) == ref_i[t]
            for e, w in zip(indices[t].tolist(), weights[t].tolist(), strict=True):
                assert abs(w - ref_w[t][e]) < 1e-6


def test_bias_changes_selection_but_weights_come_from_unbiased_scores():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    bias = torch.tensor([0.0, 0.0, 0.0, 5.0])  # drags expert 3 into the top-2
    weights, indices = route(
        logits,
        bias,
        top_k=2,
        n_group=1,
        topk_group=1,
        norm_topk_prob=False,
        routed_scaling_factor=1.0,
    )
    assert sorted(indices[0].tolist()) == [0, 3]
    got = dict(zip(indices[0].tolist(), weights[0].tolist(), strict=True))
    assert abs(got[3] - torch.sigmoid(torch.tensor(-1.0)).item()) < 1e-6


def test_moe_forward_equals_explicit_per_token_sum():
    model = tiny_model("mla")
    moe = model.moe_modules()[0][1]
    x = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got = moe(x)
        weights, indices = moe.gate(x.reshape(-1, 32))
        flat = x.reshape(-1, 32)
        expected = torch.stack(
            [
                sum(
                    w * moe.experts[e](flat[t])
                    for e, w in zip(indices[t].tolist(), weights[t], strict=True)
                )
                + moe.shared_experts(flat[t])
                for t in range(10)
            ]
        ).view(2, 5, 32)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_expert_load_is_recorded_and_drives_the_bias_update():
    model = tiny_model("mla")
    x = torch.randint(0, 96, (2, 16), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model(x)
        model(x)
    loads = model.expert_loads()
    assert sorted(loads) == [i for i, _ in model.moe_modules()]
    for load in loads.values():
        assert int(load.sum()) == 2 * 32 * model.config.num_experts_per_tok

    layer, moe = model.moe_modules()[0]
    before = moe.gate.e_score_correction_bias.clone()
    load = loads[layer]
    model.update_router_biases(rate=0.01)
    delta = moe.gate.e_score_correction_bias - before
    mean = load.float().mean()
    assert torch.allclose(delta[load.float() > mean], torch.tensor(-0.01))
    assert torch.allclose(delta[load.float() < mean], torch.tensor(0.01))
    assert (load.float() != mean).any()
    assert model.expert_loads() == {}  # consumed


def test_balance_bias_delta_is_zero_when_balanced():
    assert torch.equal(balance_bias_delta(torch.tensor([4, 4, 4]), 0.1), torch.zeros(3))


def test_router_bias_is_an_hf_named_buffer_and_experts_are_separate_linears():
    model = tiny_model("mla")
    state = model.state_dict()
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in state
    assert "model.layers.1.mlp.gate.e_score_correction_bias" not in dict(model.named_parameters())
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in dict(model.named_parameters())
    assert "model.layers.1.mlp.shared_experts.gate_proj.weight" in state
    assert "model.layers.0.mlp.gate_proj.weight" in state  # first_k_dense_replace = 1
