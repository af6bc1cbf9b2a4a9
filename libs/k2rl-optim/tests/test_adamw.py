"""The AdamW half of MuonClip is torch.optim.AdamW's arithmetic."""

from __future__ import annotations

import torch

from k2rl.optim import MuonClip


def test_adamw_group_matches_torch_adamw() -> None:
    gen = torch.Generator().manual_seed(11)
    shapes = [(7,), (5, 3), (64, 16)]  # a norm, a bias-like matrix, an embedding
    init = [torch.randn(*s, generator=gen) for s in shapes]
    ours = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    kw = dict(lr=3e-3, weight_decay=0.1)
    opt_ours = MuonClip(
        [{"params": ours, "role": "adamw"}], adamw_betas=(0.9, 0.95), adamw_eps=1e-8, **kw
    )
    opt_theirs = torch.optim.AdamW(theirs, betas=(0.9, 0.95), eps=1e-8, foreach=False, **kw)
    for _ in range(6):
        for p, q in zip(ours, theirs, strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    for p, q, x in zip(ours, theirs, init, strict=True):
        assert not torch.equal(p, x)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(
            opt_ours.state[p]["exp_avg_sq"], opt_theirs.state[q]["exp_avg_sq"]
        )
    assert all(opt_ours.state[p]["step"] == 6 for p in ours)


def test_adamw_skips_params_without_grad() -> None:
    a, b = torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(3))
    opt = MuonClip([{"params": [a, b], "role": "adamw"}], lr=0.1)
    a.grad = torch.ones(3)
    opt.step()
    assert torch.equal(b.detach(), torch.ones(3)) and b not in opt.state
    assert not torch.equal(a.detach(), torch.ones(3))
