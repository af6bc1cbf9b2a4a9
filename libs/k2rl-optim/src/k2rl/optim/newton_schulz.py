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
orthogonalised *per expert* (each expert is its own matrix, with its own norm), and stacking
same-shaped experts into one batched call is just a faster way of doing exactly that. The norm is
taken in the input precision (fp32 momentum) before the cast and applied on the first step's
small Gram matrix, so batching costs one cast-copy of each matrix and nothing more.
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
    "newton_schulz_iterate",
    "stack_for_newton_schulz",
]

NS_COEFFICIENTS: tuple[float, float, float] = (3.4445, -4.7750, 2.0315)
NS_STEPS: int = 5
NS_EPS: float = 1e-7


def stack_for_newton_schulz(
    matrices: list[Tensor], *, eps: float = NS_EPS, dtype: torch.dtype = torch.bfloat16
) -> tuple[Tensor, Tensor]:
    """Batch same-shaped matrices for :func:`newton_schulz_iterate`.

    Each input is ``(n, m)`` or a ``(k, n, m)`` stack of ``k`` matrices (MoE experts, each with
    its own norm). Returns the raw matrices cast into one ``(batch, n, m)`` tensor of ``dtype``
    and the fp32 ``1 / max(||M||_F, eps)`` per matrix, shape ``(batch, 1, 1)``. The norm is taken
    in the input precision; the normalisation itself is folded into the first iteration (on the
    small Gram matrix), so the big matrices are read once and written once here.
    """
    shape = matrices[0].shape[-2:]
    counts = [1 if x.ndim == 2 else x.shape[0] for x in matrices]
    stack = torch.empty(sum(counts), *shape, dtype=dtype, device=matrices[0].device)
    inv_norms = torch.empty(sum(counts), 1, 1, dtype=torch.float32, device=stack.device)
    offset = 0
    for x, k in zip(matrices, counts, strict=True):
        if x.shape[-2:] != shape:
            raise ValueError(f"shape {tuple(x.shape)} does not match {tuple(shape)}")
        x3 = x.reshape(k, *shape)
        norm = torch.linalg.vector_norm(x3, dim=(-2, -1), keepdim=True, dtype=torch.float32)
        torch.reciprocal(norm.clamp_(min=eps), out=inv_norms[offset : offset + k])
        stack[offset : offset + k].copy_(x3)
        offset += k
    return stack, inv_norms


def newton_schulz_iterate(
    x: Tensor,
    inv_norms: Tensor,
    *,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
) -> Tensor:
    """Run the quintic on ``X_0 = x * inv_norms`` (a ``(batch, n, m)`` stack).

    Wide matrices (``n <= m``) use the left Gram ``A = X X^T`` and ``X <- a X + (b A + c A^2) X``;
    tall ones the right Gram ``A = X^T X`` and ``X <- a X + X (b A + c A^2)`` -- the same odd
    polynomial (``X X^T X = X (X^T X)``) with the smaller Gram matrix and no transposed copies.

    The normalisation is folded into the first step, on the small matrices only: ``A / ||X||^2``
    and ``X_1 = ((a I + b A + c A^2) / ||X||) X``, so no elementwise pass over the big stack is
    needed. Later steps keep ``a X`` out of the bf16 polynomial (``baddbmm`` with ``beta=a``):
    folding ``a`` into the diagonal there too would round ``a + ...`` to bf16 every step and
    roughly double the deviation from an fp32 iteration (measured: 1.2% -> 1.7-3.5%); with one
    folded step the result is as close to fp32 as ``torch.optim.Muon``'s bf16 iteration.
    """
    if x.ndim != 3:
        raise ValueError(f"expected a (batch, n, m) stack, got shape {tuple(x.shape)}")
    if steps < 0:
        raise ValueError("steps must be >= 0")
    if steps == 0:
        return (x * inv_norms).to(x.dtype)
    a, b, c = coefficients
    wide = x.size(-2) <= x.size(-1)
    # Two ping-pong buffers for X and one each for the Gram and the polynomial: the big stacks
    # are allocated once per call, not once per step (fresh CPU allocations of this size are
    # page-faulted in every time).
    buffers: list[Tensor | None] = [None, None]
    src = x  # read, never written: the caller's stack stays intact
    k = x.size(-2) if wide else x.size(-1)
    gram = torch.empty(x.size(0), k, k, dtype=x.dtype, device=x.device)
    poly = torch.empty_like(gram)
    for step in range(steps):
        dst = buffers[step % 2]
        if dst is None:
            dst = buffers[step % 2] = torch.empty_like(x)
        torch.bmm(src, src.mT, out=gram) if wide else torch.bmm(src.mT, src, out=gram)
        if step == 0:
            gram.mul_(inv_norms.square())  # Gram of X / ||X||
        torch.baddbmm(gram, gram, gram, beta=b, alpha=c, out=poly)  # b A + c A^2
        if step == 0:
            poly.diagonal(dim1=-2, dim2=-1).add_(a)
            poly.mul_(inv_norms)
            torch.bmm(poly, src, out=dst) if wide else torch.bmm(src, poly, out=dst)
        elif wide:
            torch.baddbmm(src, poly, src, beta=a, out=dst)
        else:
            torch.baddbmm(src, src, poly, beta=a, out=dst)
        src = dst
    return src


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
    x, inv_norms = stack_for_newton_schulz([stack], eps=eps, dtype=dtype)
    return newton_schulz_iterate(x, inv_norms, steps=steps, coefficients=coefficients)


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
