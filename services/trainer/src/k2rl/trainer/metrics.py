"""What one optimizer step reports, and the throughput / MFU arithmetic behind it."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from k2rl.models import DeepseekV3Config, ModelConfig, parameter_counts
from k2rl.optim import QKClipStats

# Dense bf16 peak FLOP/s per device, for MFU when the configuration gives none.
KNOWN_PEAK_FLOPS: dict[str, float] = {
    "H100": 989.4e12,
    "H200": 989.4e12,
    "H800": 989.4e12,
    "A100": 312e12,
    "L40S": 362e12,
}


@dataclass(frozen=True)
class RLStats:
    trajectories: int
    groups: int
    reward_mean: float
    reward_std: float
    budget_penalty_mean: float
    truncated_fraction: float
    mean_response_tokens: float
    log_ratio_mean: float
    stale_token_fraction: float


@dataclass(frozen=True)
class StepMetrics:
    """One optimizer step, aggregated over all ranks (see TrainStepMetrics in trainer.proto)."""

    step: int
    loss_kind: str
    total_loss: float
    learning_rate: float
    grad_norm: float
    trained_tokens: int
    processed_tokens: int
    step_time_s: float
    tokens_per_second: float
    mfu: float
    lm_loss: float = 0.0
    policy_loss: float = 0.0
    ptx_loss: float = 0.0
    qk_clip: QKClipStats | None = None
    rl: RLStats | None = None
    peak_device_memory_bytes: int = 0
    extra: dict[str, float] = field(default_factory=dict)


def training_flops_per_token(config: ModelConfig, context_tokens: float) -> float:
    """Forward + backward FLOPs per trained token: 6 x activated parameters plus attention.

    The attention term counts QK^T and AV over a causal context of ``context_tokens``
    (about half the packed document length on average): 2 matmuls x 2 FLOPs x heads x
    (qk_dim + v_dim) / 2 x context, times 3 for forward + backward (PaLM appendix B).
    """
    activated = parameter_counts(config).activated - config.vocab_size * config.hidden_size  # no embedding matmul
    if isinstance(config, DeepseekV3Config):
        head_dims = config.qk_head_dim + config.v_head_dim
    else:
        head_dims = 2 * config.head_dim  # type: ignore[attr-defined]
    attention = 3 * 2 * config.num_hidden_layers * config.num_attention_heads * head_dims * context_tokens
    return 6.0 * activated + attention


def peak_flops(device: torch.device, configured: float) -> float:
    """Peak FLOP/s of one device: the configured value, else a known GPU's, else 0 (no MFU)."""
    if configured > 0:
        return configured
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, value in KNOWN_PEAK_FLOPS.items():
            if key in name:
                return value
    return 0.0
