"""What one optimizer step reports, the throughput / MFU arithmetic behind it, and its Prometheus form."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from k2rl.core.metrics import ServiceMetrics
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


class TrainerObserver:
    """Receives what the trainer service did; the base class ignores it (tests, CLI jobs)."""

    def step_finished(self, metrics: StepMetrics) -> None:
        """One optimizer step, aggregated over ranks."""

    def memory_moved(self, direction: str, seconds: float, bytes_moved: int) -> None:
        """An ``offload`` or ``onload`` of parameters / optimizer state / gradients finished."""

    def weights_published(self, seconds: float) -> None:
        """PublishWeights handed a version to the checkpoint engine."""


# A CPU nano step takes milliseconds; a K2-sized step on a cluster takes minutes.
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class PrometheusTrainerObserver(TrainerObserver):
    """The trainer's domain series on its /metrics (per-service registry)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.step = metrics.gauge("k2rl_trainer_step", "Optimizer steps applied so far.")
        self.steps = metrics.counter("k2rl_trainer_steps", "Optimizer steps by loss kind.", ("loss_kind",))
        self.loss = metrics.gauge("k2rl_trainer_loss", "Loss of the last step, by part (total, lm, policy, ptx).",
                                  ("part",))
        self.learning_rate = metrics.gauge("k2rl_trainer_learning_rate", "Learning rate of the last step.")
        self.grad_norm = metrics.gauge("k2rl_trainer_grad_norm", "Global gradient norm of the last step.")
        self.tokens_per_s = metrics.gauge("k2rl_trainer_tokens_per_second", "Trained tokens/s of the last step.")
        self.trained_tokens = metrics.counter("k2rl_trainer_trained_tokens", "Tokens with a loss, over all steps.")
        self.mfu = metrics.gauge("k2rl_trainer_mfu", "Model FLOPs utilisation of the last step (0 = unknown peak).")
        self.step_seconds = metrics.histogram("k2rl_trainer_step_seconds", "Wall time of one optimizer step.",
                                              ("loss_kind",), buckets=STEP_BUCKETS)
        self.max_logit = metrics.gauge("k2rl_trainer_qk_clip_max_logit",
                                       "Largest pre-softmax attention logit of the last step (QK-Clip S_max).")
        self.layer_max_logit = metrics.gauge("k2rl_trainer_qk_clip_layer_max_logit",
                                             "Largest attention logit of the last step, per layer.", ("layer",))
        self.clipped_heads = metrics.gauge("k2rl_trainer_qk_clip_clipped_heads",
                                           "Heads QK-Clip rescaled in the last step (S_max > tau).")
        self.head_rescales = metrics.counter("k2rl_trainer_qk_clip_head_rescales",
                                             "Head rescalings by QK-Clip over all steps.")
        self.move_seconds = metrics.histogram("k2rl_trainer_memory_move_seconds",
                                              "Offload (device -> host) / onload (host -> device) time.",
                                              ("direction",), buckets=STEP_BUCKETS)
        self.moved_bytes = metrics.counter("k2rl_trainer_memory_moved_bytes", "Bytes offloaded / onloaded.",
                                           ("direction",))
        self.publish_seconds = metrics.histogram("k2rl_trainer_publish_seconds",
                                                 "PublishWeights: staging + handing the version to the engine.",
                                                 buckets=STEP_BUCKETS)

    def step_finished(self, metrics: StepMetrics) -> None:
        self.step.set(metrics.step)
        self.steps.labels(metrics.loss_kind).inc()
        self.loss.labels("total").set(metrics.total_loss)
        for part, value in (("lm", metrics.lm_loss), ("policy", metrics.policy_loss), ("ptx", metrics.ptx_loss)):
            self.loss.labels(part).set(value)
        self.learning_rate.set(metrics.learning_rate)
        self.grad_norm.set(metrics.grad_norm)
        self.tokens_per_s.set(metrics.tokens_per_second)
        self.trained_tokens.inc(metrics.trained_tokens)
        self.mfu.set(metrics.mfu)
        self.step_seconds.labels(metrics.loss_kind).observe(metrics.step_time_s)
        clip = metrics.qk_clip
        if clip is not None:
            self.clipped_heads.set(clip.num_clipped)
            self.head_rescales.inc(clip.num_clipped)
            if clip.max_logit is not None:
                self.max_logit.set(clip.max_logit)
            for layer, value in zip(clip.layers, clip.per_layer_max_logit, strict=True):
                if value is not None:
                    self.layer_max_logit.labels(str(layer)).set(value)

    def memory_moved(self, direction: str, seconds: float, bytes_moved: int) -> None:
        self.move_seconds.labels(direction).observe(seconds)
        self.moved_bytes.labels(direction).inc(bytes_moved)

    def weights_published(self, seconds: float) -> None:
        self.publish_seconds.observe(seconds)
