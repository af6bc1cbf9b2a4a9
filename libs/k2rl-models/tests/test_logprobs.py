"""Vocab-chunked target log-probs equal the naive log_softmax + gather, values and gradients."""

from __future__ import annotations

import pytest
import torch

from k2rl.models.logprobs import IGNORE_INDEX, token_logprobs


def _naive(hidden, weight, targets, temperature):
    logp = torch.log_softmax((hidden @ weight.T) / temperature, dim=-1)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]
    return picked.masked_fill(targets == IGNORE_INDEX, 0.0)


@pytest.mark.parametrize("chunk_size,temperature", [(3, 1.0), (64, 0.7)])
def test_chunked_logprobs_and_gradients_match_naive(chunk_size, temperature):
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(2, 9, 16, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, generator=g, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 50, (2, 9), generator=g)
    targets[0, -1] = targets[1, 3] = IGNORE_INDEX
    upstream = torch.randn(2, 9, generator=g, dtype=torch.float64)

    got = token_logprobs(hidden, weight, targets, temperature=temperature, chunk_size=chunk_size)
    (got * upstream).sum().backward()
    got_grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    expected = _naive(hidden, weight, targets, temperature)
    (expected * upstream).sum().backward()
    torch.testing.assert_close(got.double(), expected.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(got_grads[0], hidden.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_grads[1], weight.grad, atol=1e-6, rtol=1e-6)
    assert got[0, -1] == 0 and got[1, 3] == 0


def test_model_token_logprobs_match_logits(tiny_model):
    ids = torch.randint(
        0, tiny_model.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1)
    )
    targets = torch.roll(ids, -1, dims=1)
    with torch.no_grad():
        expected = torch.log_softmax(tiny_model(ids).float() / 0.8, -1).gather(
            -1, targets[..., None]
        )[..., 0]
        got = tiny_model.token_logprobs(ids, targets, temperature=0.8, chunk_size=5)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=0)


def test_tied_embedding_receives_gradient_from_both_uses():
    from k2rl.models.testing import tiny_model

    model = tiny_model("gqa", tie_word_embeddings=True).train()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(2))
    model.token_logprobs(ids, torch.roll(ids, -1, 1), chunk_size=3).sum().backward()
    chunked = model.lm_head.weight.grad.clone()
    model.zero_grad()
    torch.log_softmax(model(ids).float(), -1).gather(
        -1, torch.roll(ids, -1, 1)[..., None]
    ).sum().backward()
    torch.testing.assert_close(chunked, model.lm_head.weight.grad, atol=1e-5, rtol=1e-4)
