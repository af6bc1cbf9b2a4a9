"""Trainer configuration: the training hyperparameters and the service's settings.

``TrainingConfig`` is what the engine needs (model, optimizer, schedule, batching); it is a
frozen pydantic model so the service settings can nest it (YAML ``trainer: {training:
{lr: ...}}``, env ``K2RL_TRAINING='{"lr": 1e-3}'``) and tests can build it directly.
Defaults follow K2 §2.5 where the report gives a value (MuonClip lr 2e-4, weight decay 0.1,
QK-Clip tau 100) and otherwise run k2-nano on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from k2rl.core.config import ServiceSettings
from k2rl.optim import ConstantSchedule, CosineSchedule, WSDSchedule
from k2rl.optim.schedules import LRSchedule


class TrainingConfig(BaseModel):
    """Hyperparameters of the training engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lr: float = Field(2e-4, ge=0, description="peak learning rate (Muon and AdamW)")
    weight_decay: float = Field(0.1, ge=0)
    momentum: float = Field(0.95, ge=0, lt=1, description="Muon momentum mu")
    qk_clip_tau: float | None = Field(100.0, gt=0, description="QK-Clip threshold; None = off")
    grad_clip_norm: float | None = Field(1.0, gt=0, description="global grad-norm clip; None = off")
    schedule: Literal["constant", "wsd", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    stable_steps: int = Field(0, ge=0, description="WSD only")
    decay_steps: int = Field(0, ge=0, description="WSD: decay length; cosine: steps after warm-up")
    final_lr_ratio: float = Field(0.1, ge=0, le=1, description="end of the decay, as a fraction of lr")
    micro_batch_tokens: int = Field(2048, gt=0, description="tokens per packed micro-batch row")
    router_bias_rate: float = Field(
        1e-3, ge=0, description="aux-loss-free MoE balancing step per optimizer step (DeepSeek-V3)"
    )
    activation_checkpointing: bool = False
    seed: int = 0
    peak_flops_per_device: float = Field(
        0.0, ge=0, description="peak FLOP/s of one device for MFU; 0 = known GPUs only, else no MFU"
    )

    def lr_schedule(self) -> LRSchedule:
        if self.schedule == "wsd":
            return WSDSchedule(self.warmup_steps, self.stable_steps, self.decay_steps, self.final_lr_ratio)
        if self.schedule == "cosine":
            return CosineSchedule(self.warmup_steps + max(self.decay_steps, 1), self.warmup_steps,
                                  self.final_lr_ratio)
        return ConstantSchedule(self.warmup_steps)


class TrainerSettings(ServiceSettings):
    """Settings of ``k2rl serve trainer``."""

    model: str = Field("k2-nano", description="preset name or HF checkpoint directory to start from")
    resume_from: Path | None = Field(
        None, description="trainer checkpoint (step_<N>/ or a directory of them) to resume at startup"
    )
    nproc: int = Field(1, ge=1, description="ranks of the trainer job (data parallel, ZeRO-1)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = cuda when available")
    checkpoint_dir: Path = Field(Path(".k2rl/trainer/checkpoints"), description="default SaveCheckpoint dir")
    dist_port: int = Field(0, ge=0, le=65535, description="torch.distributed rendezvous port; 0 = free")
    dist_timeout_s: float = Field(600.0, gt=0, description="collective timeout between ranks")
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    publish_bucket_bytes: int = Field(
        64 * 2**20, gt=0, multiple_of=256,
        description="PublishWeights bucket size; must not exceed the checkpoint engine's bucket_bytes")
    publish_gather_timeout_s: float = Field(
        300.0, gt=0, description="longest wait for the engine to gather the previous version before restaging")
