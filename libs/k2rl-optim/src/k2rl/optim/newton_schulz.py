"""Quintic Newton-Schulz orthogonalisation (the ``Newton-Schulz(M_t)`` of K2 Algorithm 1, line 5).

Muon replaces the momentum matrix ``M = U S V^T`` by (approximately) ``U V^T``. Computing it
exactly needs an SVD; instead we run ``k`` steps of the odd quintic iteration

    X <- a X + b (X X^T) X + c (X X^T)^2 X

on ``X_0 = M / ||M||_F``. Dividing by the Frobenius norm puts every singular value in (0, 1];
each step maps a singular value ``s`` to ``p(s) = a s + b s^3 + c s^5``, so after ``k`` steps the
singular values are ``p^k(s)`` and the singular vectors are untouched.

Coefficients and step count (why these): we use Keller Jordan's ``(a, b, c) = (3.4445, -4.7750,
2.0315)`` with 5 steps -- the values of the public Muon reference, of Moonlight ("Muon is
Scalable for LLM Training", the Moonshot paper K2 builds on) and of ``torch.optim.Muon``. They
are chosen to maximise the slope at zero (``a = 3.4445``) so that small singular values, which
dominate gradient spectra, are pushed up to O(1) in as few steps as possible; the price is that
``p^k`` does not converge to exactly 1 but settles in a band of roughly [0.68, 1.20], which the
Muon authors found does not hurt training. Five steps is the fewest that put every singular value
above ~1.4e-3 of the Frobenius norm into that band (4 steps: above ~4.6e-3; 3 steps: ~1.6e-2),
at 15 matmuls per matrix.
Tested in ``tests/test_newton_schulz.py`` (singular values near 1).

Precision: the iteration runs in bfloat16 by default, like the references above (the iteration is
self-correcting and only needs the output to be roughly orthogonal); ``dtype=torch.float32`` is
available for tests and for hardware without fast bf16 matmuls.

Batching: the functions accept a stack ``(batch, n, m)`` and use ``baddbmm``; K2's MoE experts are
orthogonalised *per expert* (each expert is its own matrix), and stacking same-shaped experts
into one batched call is just a faster way of doing exactly that.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "NS_COEFFICIENTS",
    "NS_EPS",
    "NS_STEPS",
    "newton_schulz",
    "newton_schulz_batched",
]

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
NS_STEPS: int = 5
NS_EPS: float = 1e-7


def newton_schulz_batched(
    stack: Tensor,
    *,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """Orthogonalise each matrix of a ``(batch, n, m)`` stack; returns a new tensor in ``dtype``.

    Each matrix is normalised by its own Frobenius norm (clamped at ``eps``), so the result is
    invariant to a positive rescaling of any input matrix (up to ``eps`` and rounding). This is
    why ``torch.optim.Muon``'s EMA momentum and Algorithm 1's summed momentum give the same
    update: the two buffers differ by the constant factor ``1 - mu``.
    """
    if stack.ndim != 3:
        raise ValueError(f"expected a (batch, n, m) stack, got shape {tuple(stack.shape)}")
    if steps < 0:
        raise ValueError("steps must be >= 0")
    a, b, c = coefficients
    x = stack.to(dtype)
    # Iterate on the wide orientation: X X^T is then the smaller Gram matrix (n <= m).
    transposed = x.size(-2) > x.size(-1)
    if transposed:
        x = x.mT.contiguous()  # one memory layout whatever the input's, for reproducible bits
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = torch.bmm(x, x.mT)
        poly = torch.baddbmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.baddbmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    if transposed:
        x = x.mT
    return x


def newton_schulz(
    matrix: Tensor,
    *,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
) -> Tensor:
    """Orthogonalise one 2-D matrix (a batch of one through :func:`newton_schulz_batched`).

    Going through the batched kernel on purpose: a matrix then gets bit-identical results
    whether it is orthogonalised alone or stacked with others, which the ZeRO-1 path relies on
    (an owner rank stacks a different subset of matrices than a single process does).
    """
    if matrix.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {tuple(matrix.shape)}")
    out = newton_schulz_batched(
        matrix.unsqueeze(0), steps=steps, coefficients=coefficients, eps=eps, dtype=dtype
    )
    return out.squeeze(0)
