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

from k2rl.optim.newton_schulz import (
    NS_COEFFICIENTS,
    NS_EPS,
    NS_STEPS,
    newton_schulz_iterate,
    stack_for_newton_schulz,
)

__all__ = [
    "DEFAULT_NS_MAX_BATCH_NUMEL",
    "DEFAULT_NS_MAX_BATCH_NUMEL_CPU",
    "default_ns_max_batch_numel",
    "apply_muon_update_",
    "matrix_shape",
    "muon_momentum_",
    "muon_update_scale",
    "orthogonalise",
]

# Upper bound on the elements stacked into one batched NS call. On GPUs big batches amortise
# kernel launches (and bound temporary memory: the iteration holds ~3 stacks of this size in
# ``ns_dtype``). On CPUs a chunk whose stacks stay in cache (1M elements = 2 MiB in bf16) beats
# streaming one huge stack through memory 15 times per step (measured on k2-micro: ~5% less CPU
# time than one stack per shape, ~12% less than one matrix at a time).
DEFAULT_NS_MAX_BATCH_NUMEL = 1 << 27
DEFAULT_NS_MAX_BATCH_NUMEL_CPU = 1 << 20


def default_ns_max_batch_numel(device: torch.device) -> int:
    return DEFAULT_NS_MAX_BATCH_NUMEL_CPU if device.type == "cpu" else DEFAULT_NS_MAX_BATCH_NUMEL


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
    max_batch_numel: int | None = None,
) -> list[Tensor]:
    """Newton-Schulz of every matrix in ``inputs`` (2-D, or 3-D expert stacks), batched by shape.

    Matrices are grouped by ``(n, m, device)`` and orthogonalised with one batched call per
    group, chunked at ``max_batch_numel`` elements (default per device, see
    :func:`default_ns_max_batch_numel`): all ``gate_proj``/``up_proj`` of all experts of the
    model share a handful of batched matmuls instead of one set per expert. Results have the
    input shapes, in ``dtype``, and are contiguous slices of the batch output.
    """
    groups: dict[tuple[int, int, torch.device], list[int]] = defaultdict(list)
    for i, x in enumerate(inputs):
        n, m = matrix_shape(x)
        groups[(n, m, x.device)].append(i)

    outputs: list[Tensor | None] = [None] * len(inputs)
    for (_, _, device), members in groups.items():
        limit = max_batch_numel or default_ns_max_batch_numel(device)
        chunks: list[list[int]] = [[]]
        numel = 0
        for i in members:
            size = inputs[i].numel()
            if chunks[-1] and numel + size > limit:
                chunks.append([])
                numel = 0
            chunks[-1].append(i)
            numel += size
        for chunk in chunks:
            # One batch layout whatever the chunk's composition, so a matrix gets the same bits
            # whichever matrices share its batch (the ZeRO-1 owner stacks a different subset).
            x, inv_norms = stack_for_newton_schulz([inputs[j] for j in chunk], eps=eps, dtype=dtype)
            ortho = newton_schulz_iterate(x, inv_norms, steps=steps, coefficients=coefficients)
            offset = 0
            for j in chunk:
                k = 1 if inputs[j].ndim == 2 else inputs[j].shape[0]
                outputs[j] = ortho[offset : offset + k].reshape(inputs[j].shape)
                offset += k
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
