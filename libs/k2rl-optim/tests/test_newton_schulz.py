"""Newton-Schulz: orthogonality (pinning test c), batching, scale invariance."""

from __future__ import annotations

import pytest
import torch

from k2rl.optim.muon import orthogonalise
from k2rl.optim.newton_schulz import NS_COEFFICIENTS, NS_STEPS, newton_schulz, newton_schulz_batched


# Rectangular Gaussians: the smallest singular value is ~1e-2 of the Frobenius norm, inside the
# range 5 steps lift. (A square Gaussian has near-zero singular values that no 5-step NS lifts.)
@pytest.mark.parametrize("shape", [(64, 128), (128, 64), (80, 96)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_singular_values_near_one(shape: tuple[int, int], dtype: torch.dtype) -> None:
    """(c): every singular value of NS(G) lands in the band the quintic converges to."""
    g = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    out = newton_schulz(g, dtype=dtype)
    assert out.shape == g.shape and out.dtype == dtype
    s = torch.linalg.svdvals(out.float())
    assert s.numel() == min(shape)
    assert s.min() > 0.6 and s.max() < 1.25, (s.min(), s.max())
    # ... whereas the input's spectrum is far from flat.
    s_in = torch.linalg.svdvals(g)
    assert s_in.max() / s_in.min() > 5


def test_more_steps_flatten_small_singular_values() -> None:
    """Step count matters: a direction at ~2e-3 of the Frobenius norm is lifted by step 5, not 4."""
    u, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(1)))
    v, _ = torch.linalg.qr(torch.randn(48, 32, generator=torch.Generator().manual_seed(2)))
    spectrum = torch.logspace(0, -2.4, 32)  # smallest = 2.2e-3 of the Frobenius norm
    g = u @ torch.diag(spectrum) @ v.T
    s4 = torch.linalg.svdvals(newton_schulz(g, steps=4, dtype=torch.float32))
    s5 = torch.linalg.svdvals(newton_schulz(g, steps=NS_STEPS, dtype=torch.float32))
    assert s4.min() < 0.4
    assert s5.min() > 0.6 and s5.max() < 1.25
    assert NS_COEFFICIENTS == (3.4445, -4.7750, 2.0315) and NS_STEPS == 5


def test_scale_invariant_up_to_eps() -> None:
    g = torch.randn(40, 24, generator=torch.Generator().manual_seed(3))
    a = newton_schulz(g, dtype=torch.float32)
    b = newton_schulz(g * 0.05, dtype=torch.float32)  # e.g. EMA vs sum momentum (1 - mu)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_zero_matrix_gives_zero_not_nan() -> None:
    out = newton_schulz(torch.zeros(8, 16))
    assert torch.equal(out.float(), torch.zeros(8, 16))


def test_batched_is_per_matrix_bitwise() -> None:
    gen = torch.Generator().manual_seed(4)
    stack = torch.randn(5, 24, 40, generator=gen)
    batched = newton_schulz_batched(stack)
    for i in range(5):
        assert torch.equal(batched[i], newton_schulz(stack[i]))


def test_orthogonalise_groups_mixed_shapes_bitwise() -> None:
    """Wide, tall, 3-D expert stacks: same bits as one matrix at a time, shapes preserved."""
    gen = torch.Generator().manual_seed(5)
    inputs = [
        torch.randn(24, 40, generator=gen),
        torch.randn(40, 24, generator=gen),  # tall: iterates with the right Gram X^T X
        torch.randn(3, 24, 40, generator=gen),  # expert stack
        torch.randn(16, 16, generator=gen),
    ]
    outs = orthogonalise(inputs, max_batch_numel=24 * 40 * 2)  # forces chunking
    assert [o.shape for o in outs] == [x.shape for x in inputs]
    assert torch.equal(outs[0], newton_schulz(inputs[0]))
    assert torch.equal(outs[1], newton_schulz(inputs[1]))
    assert torch.equal(outs[3], newton_schulz(inputs[3]))
    for e in range(3):
        assert torch.equal(outs[2][e], newton_schulz(inputs[2][e]))


def test_rejects_non_matrices() -> None:
    with pytest.raises(ValueError):
        newton_schulz(torch.zeros(3))
    with pytest.raises(ValueError):
        orthogonalise([torch.zeros(2, 3, 4, 5)])


def _reference_bf16_ns(g: torch.Tensor) -> torch.Tensor:
    """The textbook bf16 iteration (Keller Jordan's / torch.optim.Muon's, unfused)."""
    a, b, c = NS_COEFFICIENTS
    x = g.bfloat16()
    if g.shape[0] > g.shape[1]:
        x = x.T
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(NS_STEPS):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if g.shape[0] > g.shape[1] else x


@pytest.mark.parametrize("shape", [(128, 512), (512, 128), (48, 80)])
def test_bf16_iteration_is_as_accurate_as_the_textbook_one(shape: tuple[int, int]) -> None:
    """The fused/folded bf16 kernel stays as close to the fp32 iteration as the plain one."""
    gen = torch.Generator().manual_seed(6)
    ours, textbook = 0.0, 0.0
    for _ in range(4):
        g = torch.randn(*shape, generator=gen)
        exact = newton_schulz(g, dtype=torch.float32)
        ours += float((newton_schulz(g).float() - exact).norm() / exact.norm())
        textbook += float((_reference_bf16_ns(g).float() - exact).norm() / exact.norm())
    assert ours < 0.025 * 4
    assert ours < 1.25 * textbook, (ours, textbook)
