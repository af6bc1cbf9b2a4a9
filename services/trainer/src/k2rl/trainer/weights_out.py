"""Weights out: the current full parameters in HF names, bucket by bucket, from memory.

This is what the checkpoint engine gathers on every trainer node (K2 §3.3.2): each rank
holds a full replica (ZeRO-1 shards only optimizer state), so any rank can produce the
complete set without collectives or a disk round trip. Names are the HF safetensors names
(``model.layers.3.self_attn.kv_a_proj_with_mqa.weight``), the same a checkpoint holds, so
an inference engine maps them exactly as when loading one. While parameters are offloaded
the tensors come from the host copies (no extra copy, no onload needed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from k2rl.trainer.engine import TrainingEngine

DEFAULT_BUCKET_BYTES = 512 * 2**20


@dataclass(frozen=True)
class WeightGroup:
    """Consecutive tensors whose bytes fit one bucket (an oversized tensor comes alone)."""

    index: int
    tensors: tuple[tuple[str, torch.Tensor], ...]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for _, t in self.tensors)


def named_weights(engine: TrainingEngine) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) for every weight of the model, in ``state_dict`` order.

    A tied ``lm_head.weight`` is left out, as in the HF checkpoint. The tensors are the
    live ones (or their host copies): read them before the next TrainStep changes them.
    """
    model = engine.model
    for name, tensor in model.state_dict(keep_vars=True).items():
        if name == "lm_head.weight" and model.config.tie_word_embeddings:
            continue
        host = engine.offload.host_copy(tensor)
        yield name, (host if host is not None else tensor).detach()


def weight_groups(engine: TrainingEngine, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> Iterator[WeightGroup]:
    """``named_weights`` grouped into buckets of at most ``bucket_bytes`` bytes, in order."""
    if bucket_bytes <= 0:
        raise ValueError("bucket_bytes must be > 0")
    current: list[tuple[str, torch.Tensor]] = []
    size = 0
    index = 0
    for name, tensor in named_weights(engine):
        nbytes = tensor.numel() * tensor.element_size()
        if current and size + nbytes > bucket_bytes:
            yield WeightGroup(index, tuple(current))
            index += 1
            current, size = [], 0
        current.append((name, tensor))
        size += nbytes
    if current:
        yield WeightGroup(index, tuple(current))
