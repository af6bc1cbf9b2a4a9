"""Token sampling for a batch of rows, each with its own options and random generator.

Logprob semantics (the ``pi_old`` of the K1.5 loss, K2 report section 3.2.3): the value
returned for a sampled token is ``log_softmax(logits * (1 / temperature))[token]`` in fp32,
i.e. *after* temperature and *before* top-k / top-p / min_tokens masking, as the inference
proto specifies. That is exactly what the trainer recomputes with
``k2rl.models.logprobs.token_logprobs(..., temperature=T)``, so rollout and trainer
logprobs agree up to floating-point rounding. Greedy rows (temperature 0) report the
logprob under temperature 1 (the model's own distribution), since the argmax
distribution would give 0 for every token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from k2rl.inference.sampling import SamplingOptions


@dataclass(frozen=True)
class SampleRow:
    """What the sampler needs to know about one row of the batch."""

    options: SamplingOptions
    generator: torch.Generator | None  # None: the engine's shared generator
    banned_token_ids: tuple[int, ...] = ()  # EOS / stop ids while below min_tokens


def _filter_top_k_top_p(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Scaled logits [V] with tokens outside the top-k / nucleus set to -inf."""
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Keep a token if the mass strictly before it is below top_p (the first always stays).
        mass_before = torch.cumsum(probs, dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def sample(
    logits: torch.Tensor, rows: Sequence[SampleRow], shared_generator: torch.Generator
) -> tuple[list[int], list[float]]:
    """Sample one token per row of ``logits`` [B, V]; returns (token ids, logprobs)."""
    logits = logits.float()
    inv_temperature = torch.tensor(
        [1.0 / row.options.temperature if not row.options.greedy else 1.0 for row in rows],
        dtype=torch.float32,
        device=logits.device,
    )
    scaled = logits * inv_temperature[:, None]
    logprobs = torch.log_softmax(scaled, dim=-1)

    tokens: list[int] = []
    for b, row in enumerate(rows):
        row_scaled = scaled[b]
        if row.banned_token_ids:
            banned = torch.tensor(row.banned_token_ids, dtype=torch.long, device=logits.device)
            row_scaled = row_scaled.index_fill(0, banned, float("-inf"))
        if row.options.greedy:
            tokens.append(int(torch.argmax(row_scaled)))
            continue
        filtered = _filter_top_k_top_p(row_scaled, row.options.top_k, row.options.top_p)
        probs = torch.softmax(filtered, dim=-1)
        generator = row.generator if row.generator is not None else shared_generator
        # multinomial draws on the generator's device; sample on CPU for a CPU generator.
        if generator.device != probs.device:
            probs = probs.to(generator.device)
        tokens.append(int(torch.multinomial(probs, 1, generator=generator)))
    index = torch.tensor(tokens, dtype=torch.long, device=logits.device)
    picked = logprobs.gather(1, index[:, None]).squeeze(1)
    return tokens, picked.tolist()
