"""One rank's training engine: forward/backward over micro-batches, then one MuonClip step.

Every rank of a job holds a ``TrainingEngine`` over a full model replica and runs the same
method with the same global batch (the job driver sends it, see ``job.py``). Each rank
forwards its share of the packed micro-batches (``data.rank_share``); per-item loss weights
carry the global normalisation, so summing gradients over ranks gives exactly the
gradient of the whole batch, whatever the split. Then, identically on every rank:

1. all-reduce the gradients (ZeRO-1 keeps gradients replicated, shards optimizer state);
2. clip by the global norm;
3. ``MuonClip.step()``: Muon/AdamW on the parameters this rank owns, broadcast from the
   owners, QK-Clip with the step's global max logits (K2 Algorithm 1);
4. the aux-loss-free MoE router-bias update on the all-reduced expert loads;
5. advance the LR schedule.

On CUDA the forward runs under bf16 autocast over fp32 master weights; on CPU in fp32.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from k2rl.core.errors import FailedPrecondition, InvalidArgument
from k2rl.models import CausalLM
from k2rl.optim import MuonClip, lr_scheduler
from k2rl.trainer import losses
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.data import (
    LMSequence,
    MicroBatch,
    RLSample,
    build_micro_batches,
    count_targets,
    group_indices,
    rank_share,
    validate_sequences,
)
from k2rl.trainer.distributed import (
    DistContext,
    all_reduce_gradients_,
    all_reduce_scalar,
    all_reduce_sum_,
)
from k2rl.trainer.metrics import RLStats, StepMetrics, peak_flops, training_flops_per_token
from k2rl.trainer.offload import Component, OffloadManager


@dataclass(frozen=True)
class RLParams:
    """Per-step settings of the K1.5 objective (RlLossParams in trainer.proto)."""

    tau: float
    ptx_weight: float = 0.0
    truncation_penalty: float = 0.0
    soft_window_tokens: int = 0
    recompute_old_logprobs: bool = True


class TrainingEngine:
    def __init__(self, model: CausalLM, config: TrainingConfig, ctx: DistContext) -> None:
        self.model = model.to(ctx.device)
        self.config = config
        self.ctx = ctx
        self.model.model.gradient_checkpointing = config.activation_checkpointing
        self.optimizer = MuonClip.from_model(
            self.model,
            lr=config.lr,
            weight_decay=config.weight_decay,
            momentum=config.momentum,
            qk_clip_tau=config.qk_clip_tau,
            data_parallel=ctx.is_distributed,
            grad_sync="none",  # gradients are all-reduced here, before clipping
        )
        self.scheduler = lr_scheduler(self.optimizer, config.lr_schedule())
        self.offload = OffloadManager(self.model, self.optimizer, ctx.device)
        self.step = 0
        self._peak_flops = peak_flops(ctx.device, config.peak_flops_per_device)
        self.param_names = {id(p): n for n, p in self.model.named_parameters()}

    # -- public steps ----------------------------------------------------------------------

    def train_lm(self, sequences: Sequence[LMSequence], *, loss_kind: str = "pretrain") -> StepMetrics:
        """One step of next-token loss (pretraining, or SFT when the sequences carry masks)."""
        self._require_on_device()
        validate_sequences(sequences, self.model.config.vocab_size, field="sequences")
        start = time.perf_counter()
        self._start_step()
        num_targets = count_targets(sequences)
        batches = build_micro_batches(sequences, self.config.micro_batch_tokens)
        loss_sum = 0.0
        for mb in rank_share(batches, self.ctx.rank, self.ctx.world_size):
            mb = mb.to(self.ctx.device)
            loss = losses.lm_loss_sum(self._logprobs(mb), mb.targets) / num_targets
            loss.backward()
            loss_sum += float(loss.detach())
        lm_loss = all_reduce_scalar(loss_sum, self.ctx)
        processed = sum(mb.num_tokens for mb in batches)
        return self._finish_step(
            loss_kind, start, lm_loss, trained=num_targets, processed=processed,
            flops=self._flops(batches, train=True), lm_loss=lm_loss,
        )

    def train_rl(
        self, samples: Sequence[RLSample], params: RLParams, ptx: Sequence[LMSequence] = ()
    ) -> StepMetrics:
        """One step of the K1.5 policy loss plus ``ptx_weight`` x the PTX loss (K2 §3.2.3)."""
        self._require_on_device()
        _validate_rl(samples, self.model.config.vocab_size, params)
        if params.ptx_weight > 0:
            validate_sequences(ptx, self.model.config.vocab_size, field="ptx_sequences")
        start = time.perf_counter()
        self._start_step()
        raw_rewards = torch.tensor([s.reward for s in samples], dtype=torch.float64)
        penalties = torch.tensor(
            losses.budget_penalties(
                [s.response_tokens for s in samples],
                [s.token_budget for s in samples],
                [s.truncated for s in samples],
                truncation_penalty=params.truncation_penalty,
                soft_window_tokens=params.soft_window_tokens,
            ),
            dtype=torch.float64,
        )
        groups = torch.tensor(group_indices(samples))
        advantages = losses.group_advantages(raw_rewards - penalties, groups).to(self.ctx.device)
        weights = losses.k15_sample_weights(groups).to(self.ctx.device)
        batches = build_micro_batches([s.as_sequence() for s in samples], self.config.micro_batch_tokens)
        mine = [mb.to(self.ctx.device) for mb in rank_share(batches, self.ctx.rank, self.ctx.world_size)]
        rollout_sums = torch.tensor(
            [sum(lp for lp, m in zip(s.output_logprobs, s.model_token_mask, strict=True) if m) for s in samples],
            dtype=torch.float64, device=self.ctx.device,
        )
        if params.recompute_old_logprobs:
            old_sums = self._recompute_logprob_sums(mine, len(samples))
        else:
            old_sums = rollout_sums

        num = len(samples)
        policy_loss = 0.0
        start_sums = torch.zeros(num, dtype=torch.float64, device=self.ctx.device)
        for mb in mine:
            lp_sums = losses.sample_logprob_sums(self._logprobs(mb), mb.sample_index, num)
            idx = torch.tensor(mb.documents, device=self.ctx.device)
            terms = losses.k15_terms(lp_sums[idx], old_sums[idx].to(lp_sums.dtype),
                                     advantages[idx].to(lp_sums.dtype), params.tau)
            loss = (weights[idx].to(terms.dtype) * terms).sum()
            loss.backward()
            policy_loss += float(loss.detach())
            start_sums[idx] = lp_sums.detach()[idx].to(torch.float64)
        policy_loss = all_reduce_scalar(policy_loss, self.ctx)
        all_reduce_sum_(start_sums, self.ctx)

        ptx_loss = 0.0
        ptx_batches: list[MicroBatch] = []
        ptx_targets = 0
        if params.ptx_weight > 0:
            ptx_targets = count_targets(ptx)
            ptx_batches = build_micro_batches(ptx, self.config.micro_batch_tokens)
            for mb in rank_share(ptx_batches, self.ctx.rank, self.ctx.world_size):
                mb = mb.to(self.ctx.device)
                loss = losses.lm_loss_sum(self._logprobs(mb), mb.targets) / ptx_targets
                (params.ptx_weight * loss).backward()
                ptx_loss += float(loss.detach())
            ptx_loss = all_reduce_scalar(ptx_loss, self.ctx)

        response_tokens = sum(s.response_tokens for s in samples)
        rewards_std = float(raw_rewards.std(unbiased=False)) if num > 1 else 0.0
        stats = RLStats(
            trajectories=num,
            groups=int(groups.max()) + 1,
            reward_mean=float(raw_rewards.mean()),
            reward_std=rewards_std,
            budget_penalty_mean=float(penalties.mean()),
            truncated_fraction=sum(s.truncated for s in samples) / num,
            mean_response_tokens=response_tokens / num,
            log_ratio_mean=float((start_sums - rollout_sums).mean()),
            stale_token_fraction=sum(s.stale_model_tokens for s in samples) / max(response_tokens, 1),
        )
        passes = 2 if params.recompute_old_logprobs else 1
        processed = passes * sum(mb.num_tokens for mb in batches) + sum(mb.num_tokens for mb in ptx_batches)
        flops = self._flops(batches, train=True) + self._flops(ptx_batches, train=True)
        if params.recompute_old_logprobs:
            flops += self._flops(batches, train=False)
        return self._finish_step(
            "rl_k15", start, policy_loss + params.ptx_weight * ptx_loss,
            trained=response_tokens + ptx_targets, processed=processed, flops=flops,
            policy_loss=policy_loss, ptx_loss=ptx_loss, rl=stats,
        )

    @torch.no_grad()
    def eval_lm(self, sequences: Sequence[LMSequence]) -> float:
        """Mean next-token loss over the targets of ``sequences`` (no update)."""
        self._require_on_device()
        validate_sequences(sequences, self.model.config.vocab_size, field="sequences")
        batches = build_micro_batches(sequences, self.config.micro_batch_tokens)
        total = 0.0
        for mb in rank_share(batches, self.ctx.rank, self.ctx.world_size):
            mb = mb.to(self.ctx.device)
            total += float(losses.lm_loss_sum(self._logprobs(mb), mb.targets))
        return all_reduce_scalar(total, self.ctx) / count_targets(sequences)

    # -- pieces ----------------------------------------------------------------------------

    def _require_on_device(self) -> None:
        for component in (Component.PARAMETERS, Component.OPTIMIZER_STATE):
            if self.offload.is_offloaded(component):
                raise FailedPrecondition(f"{component.value} are offloaded to host memory; call Onload first")

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.ctx.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _logprobs(self, mb: MicroBatch) -> torch.Tensor:
        with self._autocast():
            return self.model.token_logprobs(
                mb.input_ids, mb.targets, mb.position_ids, document_ids=mb.document_ids
            )

    @torch.no_grad()
    def _recompute_logprob_sums(self, mine: Sequence[MicroBatch], num_samples: int) -> torch.Tensor:
        sums = torch.zeros(num_samples, dtype=torch.float64, device=self.ctx.device)
        for mb in mine:
            sums += losses.sample_logprob_sums(self._logprobs(mb), mb.sample_index, num_samples).to(torch.float64)
        return all_reduce_sum_(sums, self.ctx)

    def _start_step(self) -> None:
        # Statistics a step feeds to the optimizer must come from this step's training
        # forwards only (not from evaluation or logprob passes since the last step).
        self.model.reset_max_logits()
        self.model.reset_expert_loads()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.ctx.device)

    def _flops(self, batches: Sequence[MicroBatch], *, train: bool) -> float:
        flops = 0.0
        for mb in batches:
            lengths = torch.bincount(mb.document_ids[0]).float()
            lengths = lengths[lengths > 0]
            mean_context = float((lengths * lengths).sum() / lengths.sum()) / 2
            flops += mb.num_tokens * training_flops_per_token(self.model.config, mean_context)
        return flops if train else flops / 3

    def _finish_step(
        self, loss_kind: str, start: float, total_loss: float, *, trained: int, processed: int, flops: float,
        lm_loss: float = 0.0, policy_loss: float = 0.0, ptx_loss: float = 0.0, rl: RLStats | None = None,
    ) -> StepMetrics:
        params = [p for p in self.model.parameters() if p.requires_grad]
        all_reduce_gradients_(params, self.ctx)
        with_grad = [p for p in params if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in with_grad])
        if self.config.grad_clip_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(with_grad, self.config.grad_clip_norm, grad_norm)
        learning_rate = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self._balance_routers()
        self.step += 1
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        elapsed = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated(self.ctx.device) if self.ctx.device.type == "cuda" else 0
        denominator = elapsed * self._peak_flops * self.ctx.world_size
        return StepMetrics(
            step=self.step,
            loss_kind=loss_kind,
            total_loss=total_loss,
            learning_rate=learning_rate,
            grad_norm=float(grad_norm),
            trained_tokens=trained,
            processed_tokens=processed,
            step_time_s=elapsed,
            tokens_per_second=processed / elapsed,
            mfu=flops / denominator if denominator > 0 else 0.0,
            lm_loss=lm_loss,
            policy_loss=policy_loss,
            ptx_loss=ptx_loss,
            qk_clip=self.optimizer.last_qk_clip_stats,
            rl=rl,
            peak_device_memory_bytes=int(all_reduce_scalar(float(peak), self.ctx, op="max")),
        )

    @torch.no_grad()
    def _balance_routers(self) -> None:
        """Aux-loss-free balancing on the loads of the whole global batch (every rank alike)."""
        moe_layers = [i for i, _ in self.model.moe_modules()]
        if not moe_layers:
            return
        if self.config.router_bias_rate == 0:
            self.model.reset_expert_loads()
            return
        recorded = self.model.expert_loads()
        experts = self.model.moe_modules()[0][1].num_experts
        # A rank that ran no micro-batch recorded nothing but still joins the all-reduce.
        stacked = torch.stack([
            recorded[i] if i in recorded else torch.zeros(experts, dtype=torch.int64, device=self.ctx.device)
            for i in moe_layers
        ])
        all_reduce_sum_(stacked, self.ctx)
        self.model.update_router_biases(self.config.router_bias_rate, dict(zip(moe_layers, stacked, strict=True)))


def _validate_rl(samples: Sequence[RLSample], vocab_size: int, params: RLParams) -> None:
    if not samples:
        raise InvalidArgument("an RL step needs at least one trajectory", field="trajectories")
    if params.tau <= 0:
        raise InvalidArgument(f"tau must be > 0, got {params.tau}", field="config.rl.tau")
    if params.ptx_weight < 0:
        raise InvalidArgument("ptx_weight must be >= 0", field="config.rl.ptx_weight")
    for i, s in enumerate(samples):
        name = f"trajectories[{i}] ({s.sample_id})"
        if not s.prompt_token_ids:
            raise InvalidArgument("empty prompt", field=name)
        if not s.output_token_ids:
            raise InvalidArgument("empty output", field=name)
        if len(s.output_logprobs) != len(s.output_token_ids) or len(s.model_token_mask) != len(s.output_token_ids):
            raise InvalidArgument("output_logprobs / turns must cover output_token_ids exactly", field=name)
        if not any(s.model_token_mask):
            raise InvalidArgument("no MODEL tokens to train on", field=name)
        bad = [t for t in s.prompt_token_ids + s.output_token_ids if not 0 <= t < vocab_size]
        if bad:
            raise InvalidArgument(f"token id {bad[0]} outside the vocabulary [0, {vocab_size})", field=name)
