"""The training step on one rank: accumulation, RL objective, metrics, offload."""

from __future__ import annotations

import pytest
import torch

from k2rl.core.errors import FailedPrecondition, InvalidArgument
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.data import RLSample
from k2rl.trainer.engine import RLParams
from k2rl.trainer.offload import Component, Placement
from k2rl.trainer.testing import make_engine, random_sequences


def _params(engine) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in engine.model.state_dict().items()}


def test_micro_batching_does_not_change_the_step() -> None:
    """One row per document vs everything packed into one row: same loss, same update."""
    seqs = random_sequences(4, 24)
    small = make_engine(TrainingConfig(lr=1e-2, micro_batch_tokens=24))
    large = make_engine(TrainingConfig(lr=1e-2, micro_batch_tokens=4096))
    start = _params(small)
    m_small, m_large = small.train_lm(seqs), large.train_lm(seqs)
    assert m_small.lm_loss == pytest.approx(m_large.lm_loss, rel=1e-5)
    assert m_small.grad_norm == pytest.approx(m_large.grad_norm, rel=1e-4)
    # Muon orthogonalises in bf16, so summation-order noise in the gradient shows up at
    # bf16 resolution of the update (lr x O(1)), far below the update itself.
    a, b = _params(small), _params(large)
    update = max((a[k] - start[k]).abs().max().item() for k in a)
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 0.2 * update
    assert m_small.trained_tokens == sum(len(s.token_ids) - 1 for s in seqs)


def test_loss_decreases_and_metrics_are_reported() -> None:
    engine = make_engine(TrainingConfig(lr=1e-2, micro_batch_tokens=64, schedule="wsd", warmup_steps=2,
                                        stable_steps=2, decay_steps=2))
    seqs = random_sequences(4, 20)
    history = [engine.train_lm(seqs) for _ in range(5)]
    assert history[-1].lm_loss < history[0].lm_loss - 0.5
    assert [m.learning_rate for m in history[:3]] == pytest.approx([5e-3, 1e-2, 1e-2])
    first = history[0]
    assert first.step == 1 and first.processed_tokens == sum(len(s.token_ids) for s in seqs)
    assert first.grad_norm > 0 and first.tokens_per_second > 0 and first.mfu == 0.0  # no CPU peak configured
    assert first.qk_clip is not None and first.qk_clip.num_heads == 2 * 4 and first.qk_clip.max_logit > 0


def test_qk_clip_fires_when_logits_exceed_tau() -> None:
    engine = make_engine(TrainingConfig(lr=0.0, qk_clip_tau=1e-3, micro_batch_tokens=64))
    before = engine.model.model.layers[0].self_attn.q_b_proj.weight.detach().clone()
    stats = engine.train_lm(random_sequences(2, 16)).qk_clip
    assert stats is not None and stats.num_clipped == stats.num_heads
    after = engine.model.model.layers[0].self_attn.q_b_proj.weight
    assert after.abs().sum() < before.abs().sum()  # lr 0: only QK-Clip moved it


@pytest.mark.filterwarnings(r"ignore:Seems like `optimizer.step\(\)` has been overridden")
def test_grad_clipping_bounds_the_gradient_the_optimizer_sees() -> None:
    engine = make_engine(TrainingConfig(lr=1e-2, grad_clip_norm=1e-3, micro_batch_tokens=64))
    seen: list[float] = []
    step = engine.optimizer.step

    def recording_step(*args, **kwargs):
        grads = [p.grad for p in engine.model.parameters() if p.grad is not None]
        seen.append(float(torch.nn.utils.get_total_norm(grads)))
        return step(*args, **kwargs)

    engine.optimizer.step = recording_step
    metrics = engine.train_lm(random_sequences(2, 16))
    assert metrics.grad_norm > 1e-2  # reported before clipping
    assert seen == [pytest.approx(1e-3, rel=1e-3)]


def _bandit_samples(k: int) -> list[RLSample]:
    """One prompt, K samples: half answer token 'A' (reward 1), half 'B' (reward 0)."""
    prompt = tuple(b"Q:")
    return [
        RLSample(f"t{i}", "p0", prompt, (ord("A") if i % 2 == 0 else ord("B"),), (-0.69,), (True,),
                 1.0 if i % 2 == 0 else 0.0)
        for i in range(k)
    ]


@torch.no_grad()
def _answer_probs(engine) -> tuple[float, float]:
    logits = engine.model(torch.tensor([list(b"Q:")]))[0, -1]
    probs = logits.softmax(-1)
    return float(probs[ord("A")]), float(probs[ord("B")])


def test_toy_bandit_raises_the_probability_of_the_rewarded_response() -> None:
    engine = make_engine(TrainingConfig(lr=5e-3, micro_batch_tokens=64))
    p_a0, p_b0 = _answer_probs(engine)
    for _ in range(4):
        metrics = engine.train_rl(_bandit_samples(4), RLParams(tau=0.5))
    p_a, p_b = _answer_probs(engine)
    assert p_a > 2 * p_a0 and p_b < p_b0
    assert metrics.rl is not None and metrics.rl.groups == 1 and metrics.rl.reward_mean == 0.5
    assert metrics.policy_loss > 0 and metrics.loss_kind == "rl_k15"


def test_rl_with_ptx_and_budget_penalty() -> None:
    engine = make_engine()
    samples = _bandit_samples(2)
    samples[0] = RLSample("t0", "p0", (1, 2), (65, 66), (-1.0, -1.0), (True, True), 1.0, truncated=True,
                          token_budget=2)
    m = engine.train_rl(samples, RLParams(tau=0.1, ptx_weight=0.5, truncation_penalty=1.0,
                                          recompute_old_logprobs=False), random_sequences(2, 12))
    assert m.rl.budget_penalty_mean == pytest.approx(0.5) and m.rl.truncated_fraction == 0.5
    assert m.ptx_loss > 0 and m.total_loss == pytest.approx(m.policy_loss + 0.5 * m.ptx_loss)
    with pytest.raises(InvalidArgument, match="tau"):
        engine.train_rl(samples, RLParams(tau=0.0))


def test_offload_onload_round_trip_is_bit_identical() -> None:
    engine = make_engine()
    engine.train_lm(random_sequences(2, 16))  # optimizer state exists now
    params = _params(engine)
    state = {id(p): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
             for p, s in engine.optimizer.state.items()}
    assert state
    moved = engine.offload.offload(list(Component))
    assert moved > sum(v.numel() * 4 for v in params.values())
    assert engine.offload.placement(Component.PARAMETERS) is Placement.HOST
    assert all(p.numel() == 0 for p in engine.model.parameters())  # device storage released
    with pytest.raises(FailedPrecondition, match="Onload"):
        engine.train_lm(random_sequences(1, 8))
    assert engine.offload.onload(list(Component)) == moved
    assert engine.offload.placement(Component.PARAMETERS) is Placement.DEVICE
    after = _params(engine)
    assert all(torch.equal(params[k], after[k]) for k in params)
    for p, s in engine.optimizer.state.items():
        for k, v in state[id(p)].items():
            assert torch.equal(s[k], v)
    engine.train_lm(random_sequences(2, 16))  # and training continues
