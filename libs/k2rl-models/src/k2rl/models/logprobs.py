"""Per-token log-probabilities of given targets, computed in vocabulary-sized chunks.

For RL (K1.5 loss, K2 §3.2) and SFT we need log pi(y_t | y_<t) for the sampled token only.
Materialising [tokens, vocab] fp32 log-softmax for a whole batch (K2: vocab 163840) costs
more memory than the model's activations, so we go ``chunk_size`` tokens at a time and, for
training, recompute each chunk's logits in backward instead of saving them: peak extra
memory is one [chunk_size, vocab] block in both passes.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


class _ChunkedTargetLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        chunk_size: int,
        inv_temperature: float,
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
        logprobs = torch.zeros(num_tokens, dtype=acc, device=hidden.device)
        lse = torch.zeros(num_tokens, dtype=acc, device=hidden.device)
        valid = targets != IGNORE_INDEX
        safe_targets = targets.clamp(min=0)
        for start in range(0, num_tokens, chunk_size):
            end = min(start + chunk_size, num_tokens)
            logits = (hidden[start:end] @ weight.T).to(acc) * inv_temperature
            lse[start:end] = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, safe_targets[start:end, None]).squeeze(1)
            logprobs[start:end] = picked - lse[start:end]
        logprobs = logprobs.masked_fill(~valid, 0.0)
        ctx.save_for_backward(hidden, weight, safe_targets, valid, lse)
        ctx.chunk_size = chunk_size
        ctx.inv_temperature = inv_temperature
        return logprobs

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        hidden, weight, targets, valid, lse = ctx.saved_tensors
        scale = ctx.inv_temperature
        acc = lse.dtype
        grad_out = grad_out.to(acc).masked_fill(~valid, 0.0)
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=acc, device=weight.device)
            if ctx.needs_input_grad[1]
            else None
        )
        for start in range(0, hidden.shape[0], ctx.chunk_size):
            end = min(start + ctx.chunk_size, hidden.shape[0])
            h = hidden[start:end]
            logits = (h @ weight.T).to(acc) * scale
            # d logp(t) / d logits = onehot(t) - softmax(logits)
            grad_logits = -torch.exp(logits - lse[start:end, None]) * grad_out[start:end, None]
            grad_logits.scatter_add_(1, targets[start:end, None], grad_out[start:end, None])
            grad_logits = grad_logits * scale
            if grad_hidden is not None:
                grad_hidden[start:end] = (grad_logits.to(weight.dtype) @ weight).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += grad_logits.T @ h.to(acc)
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """log softmax(hidden @ weight^T / temperature)[target] for hidden [..., D], targets [...].

    Returns fp32 [...] (fp64 for fp64 inputs); positions whose target is ``IGNORE_INDEX``
    (-100) get 0 and no gradient. Differentiable w.r.t. ``hidden`` and ``weight``.
    """
    lead = targets.shape
    out = _ChunkedTargetLogprobs.apply(
        hidden.reshape(-1, hidden.shape[-1]),
        weight,
        targets.reshape(-1),
        chunk_size,
        1.0 / temperature,
    )
    return out.view(lead)
