"""Activation checkpointing: same gradients, expert loads counted once, max logits unchanged."""

from __future__ import annotations

import torch

from k2rl.models.testing import tiny_model


def _step(model, ids):
    model.zero_grad()
    model.reset_expert_loads()
    model.reset_max_logits()
    model.token_logprobs(ids, torch.roll(ids, -1, 1)).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return grads, model.expert_loads(), model.max_logits()


def test_checkpointed_layers_give_the_same_gradients_and_statistics():
    model = tiny_model("mla").train()
    model.set_track_max_logits(True)
    ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(0))
    grads, loads, max_logits = _step(model, ids)
    model.model.gradient_checkpointing = True
    grads_ckpt, loads_ckpt, max_logits_ckpt = _step(model, ids)

    assert grads.keys() == grads_ckpt.keys()
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], atol=1e-6, rtol=1e-5)
    for layer in loads:
        assert torch.equal(loads_ckpt[layer], loads[layer])  # not doubled by the recompute
        assert int(loads[layer].sum()) == 24 * model.config.num_experts_per_tok
    for layer in max_logits:
        torch.testing.assert_close(max_logits_ckpt[layer], max_logits[layer])
