"""Muon math of K2 Algorithm 1 (lines 3-7) as pure functions over lists of tensors.

    M_t = mu M_{t-1} + G_t                          (line 4, M_0 = 0: a *sum*, not an EMA)
    O_t = NewtonSchulz(M_t) * sqrt(max(n, m)) * 0.2 (line 5, "match Adam RMS")
    W_t = W_{t-1} - lr (O_t + wd W_{t-1})           (line 6, decoupled weight decay)

Why ``0.2 * sqrt(max(n, m))``: an orthogonalised ``n x m`` matrix has ``min(n, m)`` singular
values ~1, so its RMS is ``sqrt(min(n, m) / (n m)) = 1 / sqrt(max(n, m))``. Multiplying by
``0.2 sqrt(max(n, m))`` gives every matrix an update RMS of ~0.2, the typical RMS of an AdamW
update, so Muon matrices and AdamW parameters can share one learning rate and weight decay
(Moonlight §2.2; K2 uses lr 2e-4, wd 0.1 for both).

Nesterov (optional; Algorithm 1 has none): the NS input becomes ``G_t + mu M_t`` (Moonlight's
public implementation), the sum-momentum analogue of ``torch.optim.Muon``'s
``grad.lerp(buf, mu)``.

``torch.optim.Muon`` keeps ``B_t = lerp(B_{t-1}, G_t, 1 - mu) = (1 - mu) M_t`` (an EMA). By
induction from ``B_0 = M_0 = 0`` the two buffers differ by the constant ``1 - mu`` (and the
Nesterov inputs by the same factor), and NS normalises its input by its Frobenius norm, so the
orthogonalised updates agree up to ``eps`` and rounding (tests/test_muon.py).

MoE experts: a parameter may be a 3-D stack ``(num_experts, n, m)``; each expert is its own
matrix (its own Frobenius normalisation and orthogonalisation, and ``n, m`` are the expert's
shape), never one ``(E n) x m`` matrix.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from k2rl.optim.newton_schulz import NS_COEFFICIENTS, NS_EPS, NS_STEPS, newton_schulz_batched

__all__ = [
    "DEFAULT_NS_MAX_BATCH_NUMEL",
    "apply_muon_update_",
    "matrix_shape",
    "muon_momentum_",
    "muon_update_scale",
    "orthogonalise",
]

# Upper bound on the elements stacked into one batched NS call (bounds temporary memory: the
# iteration holds ~3 stacks of this size in ``ns_dtype``).
DEFAULT_NS_MAX_BATCH_NUMEL = 1 << 27


def matrix_shape(param: Tensor) -> tuple[int, int]:
    """``(n, m)`` of the matrix (or of each expert matrix of a 3-D stack) Muon treats."""
    if param.ndim not in (2, 3):
        raise ValueError(f"Muon needs 2-D matrices or 3-D expert stacks, got {tuple(param.shape)}")
    return int(param.shape[-2]), int(param.shape[-1])


def muon_update_scale(shape: tuple[int, int]) -> float:
    """Algorithm 1 line 5 factor ``0.2 * sqrt(max(n, m))`` (match AdamW update RMS)."""
    return 0.2 * math.sqrt(max(shape))


def muon_momentum_(
    buffers: list[Tensor], grads: list[Tensor], *, momentum: float, nesterov: bool
) -> list[Tensor]:
    """Algorithm 1 line 4 in place (``M <- mu M + G``); returns the NS inputs.

    Without Nesterov the NS input *is* the buffer (do not modify it); with Nesterov it is a new
    tensor ``G + mu M``.
    """
    if not buffers:
        return []
    torch._foreach_mul_(buffers, momentum)
    torch._foreach_add_(buffers, grads)
    if nesterov:
        return list(torch._foreach_add(grads, buffers, alpha=momentum))
    return list(buffers)


def orthogonalise(
    inputs: Sequence[Tensor],
    *,
    steps: int = NS_STEPS,
    coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: float = NS_EPS,
    dtype: torch.dtype = torch.bfloat16,
    max_batch_numel: int = DEFAULT_NS_MAX_BATCH_NUMEL,
) -> list[Tensor]:
    """Newton-Schulz of every matrix in ``inputs`` (2-D, or 3-D expert stacks), batched by shape.

    Matrices are brought to their wide orientation (``n <= m``; ``NS(X^T) = NS(X)^T``), grouped
    by ``(n, m, device)`` and orthogonalised with one batched call per group (chunked at
    ``max_batch_numel``), so e.g. all ``gate_proj``/``up_proj``/``down_proj`` of all experts of a
    layer share a handful of ``baddbmm`` calls. Results have the input shapes, in ``dtype``.
    """
    groups: dict[tuple[int, int, torch.device], list[int]] = defaultdict(list)
    wide: list[Tensor] = []
    for i, x in enumerate(inputs):
        n, m = matrix_shape(x)
        w = x.mT if n > m else x
        w = w.reshape(-1, *w.shape[-2:])
        wide.append(w)
        groups[(w.shape[-2], w.shape[-1], w.device)].append(i)

    outputs: list[Tensor | None] = [None] * len(inputs)
    for (rows, cols, _), members in groups.items():
        per_matrix = rows * cols
        chunk: list[int] = []
        chunk_numel = 0
        for i in members + [-1]:  # -1 flushes the last chunk
            count = wide[i].shape[0] if i >= 0 else 0
            if chunk and (i < 0 or chunk_numel + count * per_matrix > max_batch_numel):
                # cat (or .contiguous() for one) gives every stack the same layout, so a matrix
                # gets the same bits whichever matrices share its batch (ZeRO-1 relies on it).
                if len(chunk) > 1:
                    stack = torch.cat([wide[j] for j in chunk])
                else:
                    stack = wide[chunk[0]].contiguous()
                ortho = newton_schulz_batched(
                    stack, steps=steps, coefficients=coefficients, eps=eps, dtype=dtype
                )
                offset = 0
                for j in chunk:
                    k = wide[j].shape[0]
                    out = ortho[offset : offset + k]
                    offset += k
                    n, m = matrix_shape(inputs[j])
                    out = out.mT if n > m else out
                    outputs[j] = out.reshape(inputs[j].shape)
                chunk, chunk_numel = [], 0
            if i >= 0:
                chunk.append(i)
                chunk_numel += count * per_matrix
    return outputs  # type: ignore[return-value]


def apply_muon_update_(
    params: list[Tensor],
    orthogonalised: list[Tensor],
    *,
    lr: float,
    weight_decay: float,
    scale: float,
) -> None:
    """Algorithm 1 line 6: ``W <- W - lr (scale * NS(M) + wd W)`` for params sharing ``scale``."""
    if not params:
        return
    if weight_decay != 0.0:
        torch._foreach_mul_(params, 1.0 - lr * weight_decay)
    torch._foreach_add_(params, orthogonalised, alpha=-lr * scale)
