"""Acceptance: greedy output equals step-by-step full recompute, and engine logprobs equal
the trainer's (k2rl.models) logprobs, under continuous batching with mixed lengths."""

from __future__ import annotations

import pytest
import torch

from k2rl.inference.engine import Engine, EngineConfig
from k2rl.inference.testing import TinyTokenizer, logprobs_of, request, run_to_completion, tokens_of
from k2rl.models import load_model
from k2rl.models.tokenizer import load_tokenizer

PROMPT_LENS = (3, 11, 6, 17)


def _prompts(vocab: int, lens=PROMPT_LENS, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, min(vocab, 90), (n,), generator=g).tolist() for n in lens]


@torch.no_grad()
def _greedy_reference(model, prompt: list[int], steps: int) -> list[int]:
    """The naive definition: recompute the whole sequence, take the argmax, repeat."""
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt):]


def _stagger(engine: Engine, prompts: list[list[int]], max_tokens: list[int], **options) -> dict:
    """Admit requests while others decode (continuous batching), then run to the end."""
    outputs: dict = {}
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"r{i}", prompt, max_tokens=max_tokens[i], ignore_eos=True, **options))
        for update in engine.step():  # one step between arrivals: new rows join a running batch
            outputs.setdefault((update.request_id, update.sample_index), []).append(update)
    for key, updates in run_to_completion(engine).items():
        outputs.setdefault(key, []).extend(updates)
    return outputs


@pytest.mark.parametrize("kind", ["k2-nano", "gqa"])
def test_greedy_equals_full_recompute_with_mixed_lengths(kind, gqa_model) -> None:
    if kind == "k2-nano":
        model, tokenizer = load_model("k2-nano").eval(), load_tokenizer("k2-nano")
    else:
        model, tokenizer = gqa_model, TinyTokenizer()
    engine = Engine(model, tokenizer, EngineConfig(block_size=4, num_kv_blocks=64))
    prompts = _prompts(model.config.vocab_size)
    max_tokens = [6, 3, 8, 5]
    outputs = _stagger(engine, prompts, max_tokens, temperature=0.0)
    for i, prompt in enumerate(prompts):
        assert tokens_of(outputs[(f"r{i}", 0)]) == _greedy_reference(model, prompt, max_tokens[i]), f"request {i}"


@torch.no_grad()
def _trainer_logprobs(model, prompt: list[int], output: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + output])
    targets = torch.full_like(ids, -100)
    targets[0, len(prompt) - 1 : -1] = torch.tensor(output)
    logp = model.token_logprobs(ids, targets, temperature=temperature)
    return logp[0, len(prompt) - 1 : -1]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_match_trainer_under_continuous_batching(make_engine, mla_model, temperature) -> None:
    engine = make_engine(max_running_requests=3)  # 5 requests, at most 3 running: batches change size
    prompts = _prompts(96, (4, 9, 2, 13, 7), seed=1)
    outputs = _stagger(engine, prompts, [7, 5, 9, 4, 6], temperature=temperature, seed=3)
    diffs = []
    for i, prompt in enumerate(prompts):
        updates = outputs[(f"r{i}", 0)]
        engine_lp = torch.tensor(logprobs_of(updates))
        trainer_lp = _trainer_logprobs(mla_model, prompt, tokens_of(updates), temperature)
        diffs.append((engine_lp - trainer_lp).abs())
    diff = torch.cat(diffs)
    print(f"logprob |engine - trainer|: max {diff.max():.3e} mean {diff.mean():.3e} over {diff.numel()} tokens")
    assert diff.numel() == 7 + 5 + 9 + 4 + 6
    assert float(diff.max()) < 1e-4
