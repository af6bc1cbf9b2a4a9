"""Muon of Algorithm 1 vs torch.optim.Muon (pinning test b) and the per-expert rule."""

from __future__ import annotations

import math

import pytest
import torch

from k2rl.optim import MuonClip
from k2rl.optim.muon import muon_momentum_, muon_update_scale
from k2rl.optim.newton_schulz import newton_schulz

SHAPES = [(48, 80), (80, 48), (64, 64)]


def _grads(steps: int) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(7)
    return [[torch.randn(*s, generator=gen) for s in SHAPES] for _ in range(steps)]


def _params() -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(8)
    return [torch.nn.Parameter(torch.randn(*s, generator=gen) * 0.05) for s in SHAPES]


def _run_pair(
    nesterov: bool, ns_dtype: torch.dtype, steps: int = 5
) -> tuple[list, list, list, dict]:
    lr, wd, mu = 0.02, 0.1, 0.95
    ours, theirs = _params(), _params()
    opt_ours = MuonClip(
        ours, lr=lr, weight_decay=wd, momentum=mu, nesterov=nesterov, ns_dtype=ns_dtype
    )
    opt_theirs = torch.optim.Muon(
        theirs,
        lr=lr,
        weight_decay=wd,
        momentum=mu,
        nesterov=nesterov,
        adjust_lr_fn="match_rms_adamw",  # torch's name for the 0.2 sqrt(max(n, m)) factor
    )
    start = [p.detach().clone() for p in ours]
    for grads in _grads(steps):
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    for p, q in zip(ours, theirs, strict=True):
        # EMA buffer = (1 - mu) * sum buffer, up to fp32 rounding.
        torch.testing.assert_close(
            opt_theirs.state[q]["momentum_buffer"],
            (1 - mu) * opt_ours.state[p]["momentum_buffer"],
            rtol=1e-5,
            atol=1e-6,
        )
    return ours, theirs, start, {"mu": mu}


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_torch_optim_muon_exactly_in_fp32(nesterov: bool, monkeypatch) -> None:
    """(b): torch.optim.Muon (EMA momentum) and Algorithm 1 (sum momentum) agree up to eps.

    Both NS run in fp32 here (torch's is patched to fp32), so the only differences are the
    ``(1 - mu)`` factor NS normalises away and fp32 rounding.
    """
    import torch.optim._muon as torch_muon

    def fp32_ns(grad, ns_coefficients, ns_steps, eps):  # torch's signature
        return newton_schulz(
            grad, steps=ns_steps, coefficients=ns_coefficients, eps=eps, dtype=torch.float32
        )

    monkeypatch.setattr(torch_muon, "_zeropower_via_newtonschulz", fp32_ns)
    ours, theirs, start, _ = _run_pair(nesterov, torch.float32)
    for p, q, p0 in zip(ours, theirs, start, strict=True):
        assert (p - q).norm() < 1e-4 * (q - p0).norm()


@pytest.mark.parametrize("nesterov", [False, True])
def test_matches_stock_torch_optim_muon_in_bf16(nesterov: bool) -> None:
    """Against the stock (bf16) torch.optim.Muon: equal up to bf16 NS noise (~1% of a step)."""
    ours, theirs, start, _ = _run_pair(nesterov, torch.bfloat16)
    for p, q, p0 in zip(ours, theirs, start, strict=True):
        assert (p - q).norm() < 0.03 * (q - p0).norm()


def test_sum_and_ema_momentum_orthogonalise_to_same_update() -> None:
    """NS normalises its input, so M_t and (1-mu) M_t give one update (fp32 NS: to ~eps)."""
    mu = 0.9
    grads = _grads(4)
    total = [torch.zeros(s) for s in SHAPES]
    ema = [torch.zeros(s) for s in SHAPES]
    for gs in grads:
        muon_momentum_(total, gs, momentum=mu, nesterov=False)
        for b, g in zip(ema, gs, strict=True):
            b.lerp_(g, 1 - mu)
    for t, e in zip(total, ema, strict=True):
        torch.testing.assert_close(
            newton_schulz(t, dtype=torch.float32),
            newton_schulz(e, dtype=torch.float32),
            rtol=1e-5,
            atol=1e-5,
        )


def test_momentum_is_a_sum_and_nesterov_adds_mu_m() -> None:
    g1, g2 = torch.randn(3, 4), torch.randn(3, 4)
    buf = [torch.zeros(3, 4)]
    muon_momentum_(buf, [g1], momentum=0.5, nesterov=False)
    out = muon_momentum_(buf, [g2], momentum=0.5, nesterov=False)
    torch.testing.assert_close(buf[0], 0.5 * g1 + g2)
    assert out[0] is buf[0]
    buf = [torch.zeros(3, 4)]
    muon_momentum_(buf, [g1], momentum=0.5, nesterov=True)
    out = muon_momentum_(buf, [g2], momentum=0.5, nesterov=True)
    torch.testing.assert_close(out[0], g2 + 0.5 * (0.5 * g1 + g2))


def test_one_step_is_algorithm_1() -> None:
    """W_1 = W_0 - lr (0.2 sqrt(max(n,m)) NS(G) + wd W_0), exactly."""
    lr, wd = 0.03, 0.2
    w0 = torch.randn(24, 40)
    g = torch.randn(24, 40)
    p = torch.nn.Parameter(w0.clone())
    p.grad = g.clone()
    MuonClip([p], lr=lr, weight_decay=wd, momentum=0.9).step()
    expected = w0 * (1 - lr * wd) - lr * muon_update_scale((24, 40)) * newton_schulz(g).float()
    torch.testing.assert_close(p.detach(), expected, rtol=0, atol=1e-6)
    assert muon_update_scale((24, 40)) == pytest.approx(0.2 * math.sqrt(40))


def test_update_rms_matches_adamw_scale() -> None:
    """The 0.2 sqrt(max(n, m)) factor gives an update RMS of about 0.2 for any shape."""
    for shape in [(32, 512), (512, 32), (256, 256)]:
        o = newton_schulz(torch.randn(*shape), dtype=torch.float32) * muon_update_scale(shape)
        assert 0.15 < o.pow(2).mean().sqrt() < 0.25


def test_experts_are_orthogonalised_per_expert() -> None:
    """A 3-D expert stack updates exactly like separate expert matrices, not like one matrix."""
    gen = torch.Generator().manual_seed(9)
    stack = torch.randn(4, 16, 24, generator=gen) * 0.1
    grads = torch.randn(4, 16, 24, generator=gen)
    grads[0] *= 100.0  # one loud expert must not drown the others
    stacked = torch.nn.Parameter(stack.clone())
    stacked.grad = grads.clone()
    separate = [torch.nn.Parameter(stack[e].clone()) for e in range(4)]
    for e, p in enumerate(separate):
        p.grad = grads[e].clone()
    as_one = torch.nn.Parameter(stack.reshape(64, 24).clone())
    as_one.grad = grads.reshape(64, 24).clone()
    kw = dict(lr=0.05, weight_decay=0.0, momentum=0.9)
    MuonClip([stacked], **kw).step()
    MuonClip(separate, **kw).step()
    MuonClip([as_one], **kw).step()
    for e in range(4):
        assert torch.equal(stacked[e], separate[e])
    moved = (stacked.detach() - stack).reshape(4, -1).norm(dim=1)
    assert moved.max() / moved.min() < 1.1  # each expert moves by its own O(1) update
    # The one-big-matrix mistake lets the loud expert take most of the update.
    moved_one = (as_one.detach().reshape(4, 16, 24) - stack).reshape(4, -1).norm(dim=1)
    assert moved_one[0] / moved_one[1:].max() > 1.5


def test_torch_muon_comparison_detects_a_wrong_scale() -> None:
    """The tolerance above is tight enough to catch torch's other scaling convention."""
    ours, theirs = _params(), _params()
    opt_ours = MuonClip(ours, lr=0.02, weight_decay=0.1, momentum=0.95)
    opt_theirs = torch.optim.Muon(
        theirs, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=False, adjust_lr_fn="original"
    )
    start = [p.detach().clone() for p in ours]
    for grads in _grads(2):
        for p, q, g in zip(ours, theirs, grads, strict=True):
            p.grad, q.grad = g.clone(), g.clone()
        opt_ours.step()
        opt_theirs.step()
    assert all(
        (p - q).norm() > 0.01 * (q - p0).norm()
        for p, q, p0 in zip(ours, theirs, start, strict=True)
    )
