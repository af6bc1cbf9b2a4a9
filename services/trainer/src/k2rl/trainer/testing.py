"""Helpers for tests and benchmarks: small models and batches on one CPU rank."""

from __future__ import annotations

import dataclasses

import torch

from k2rl.models import ModelConfig, build_model, get_preset
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.data import LMSequence
from k2rl.trainer.distributed import DistContext
from k2rl.trainer.engine import TrainingEngine


def tiny_config() -> ModelConfig:
    """k2-nano (MLA + MoE, 1 dense layer then MoE) with 2 layers and 4 routed experts."""
    return dataclasses.replace(get_preset("k2-nano"), num_hidden_layers=2, n_routed_experts=4)


def single_rank() -> DistContext:
    return DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def make_engine(config: TrainingConfig | None = None, seed: int = 0) -> TrainingEngine:
    model = build_model(tiny_config(), seed=seed)
    return TrainingEngine(model, config or TrainingConfig(lr=1e-2, micro_batch_tokens=64), single_rank())


def random_sequences(count: int, length: int, seed: int = 0, *, vary: bool = True) -> list[LMSequence]:
    """Random byte documents; lengths vary (length, length-4, length-8, ...) unless ``vary=False``."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        n = length - (i % 3) * 4 if vary else length
        out.append(LMSequence(tuple(torch.randint(0, 256, (n,), generator=g).tolist()), None, f"s{i}"))
    return out
