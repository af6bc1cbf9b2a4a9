"""Learning-rate schedules as multipliers of the peak LR (``LambdaLR``-compatible).

K2 §2.5: WSD (warmup-stable-decay) -- 500 warm-up steps, a constant 2e-4 for the first 10T tokens,
then a cosine decay from 2e-4 to 2e-5 over 5.5T tokens (``final_ratio = 0.1``). The step index is
the number of optimizer steps already taken (0 for the first step), the convention of
``torch.optim.lr_scheduler.LambdaLR``. Warm-up is linear and reaches the peak at step
``warmup_steps - 1``, so no step runs at LR 0; symmetrically a decay of ``D`` steps reaches the
final LR on its last step (``decay_start + D - 1``) and stays there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "ConstantSchedule",
    "CosineSchedule",
    "LRSchedule",
    "WSDSchedule",
    "k2_pretrain_schedule",
    "lr_scheduler",
]


class LRSchedule(Protocol):
    def __call__(self, step: int) -> float: ...


def _warmup(step: int, warmup_steps: int) -> float:
    return min(1.0, (step + 1) / warmup_steps) if warmup_steps > 0 else 1.0


def _cosine(progress: float, final_ratio: float) -> float:
    progress = min(max(progress, 0.0), 1.0)
    return final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class ConstantSchedule:
    """Linear warm-up, then the peak LR forever."""

    warmup_steps: int = 0

    def __call__(self, step: int) -> float:
        return _warmup(step, self.warmup_steps)


@dataclass(frozen=True)
class CosineSchedule:
    """Linear warm-up, then cosine from the peak to ``final_ratio * peak`` at ``total_steps``."""

    total_steps: int
    warmup_steps: int = 0
    final_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.total_steps <= self.warmup_steps:
            raise ValueError("total_steps must exceed warmup_steps")

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps)
        span = self.total_steps - self.warmup_steps
        return _cosine((step - self.warmup_steps + 1) / span, self.final_ratio)


@dataclass(frozen=True)
class WSDSchedule:
    """Warm-up, stable at the peak for ``stable_steps``, cosine decay over ``decay_steps``."""

    warmup_steps: int
    stable_steps: int
    decay_steps: int
    final_ratio: float = 0.1

    def __post_init__(self) -> None:
        if min(self.warmup_steps, self.stable_steps, self.decay_steps) < 0:
            raise ValueError("step counts must be >= 0")
        if not 0.0 <= self.final_ratio <= 1.0:
            raise ValueError("final_ratio must be in [0, 1]")

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.stable_steps + self.decay_steps

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(step, self.warmup_steps)
        decay_start = self.warmup_steps + self.stable_steps
        if step < decay_start:
            return 1.0
        if self.decay_steps == 0:
            return self.final_ratio
        return _cosine((step - decay_start + 1) / self.decay_steps, self.final_ratio)


def k2_pretrain_schedule(stable_steps: int, decay_steps: int) -> WSDSchedule:
    """K2 §2.5 shape: 500 warm-up steps, stable at 2e-4, cosine to 2e-5 (use with lr=2e-4)."""
    return WSDSchedule(
        warmup_steps=500, stable_steps=stable_steps, decay_steps=decay_steps, final_ratio=0.1
    )


def lr_scheduler(optimizer: Optimizer, schedule: LRSchedule) -> LambdaLR:
    """``LambdaLR`` applying ``schedule`` to every param group (Muon and AdamW alike)."""
    return LambdaLR(optimizer, lr_lambda=schedule)
