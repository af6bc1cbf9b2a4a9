"""Source side: pack named tensors into buckets (trainer staging buffers, engine startup).

``pack_bucket`` writes one bucket's tensors into a byte buffer and zeroes the alignment gaps,
so the bucket's checksum depends only on the weights. ``WeightStager`` is what a trainer
rank uses to publish: plan once, pack every bucket back to back into one POSIX
shared-memory staging buffer (reused while the layout fits), checksum each bucket.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

from k2rl.weights.checksum import ChecksumAlgorithm, compute_checksum
from k2rl.weights.ipc import BufferDescriptor, describe_shm
from k2rl.weights.layout import (
    DEFAULT_ALIGNMENT,
    DEFAULT_BUCKET_BYTES,
    BucketLayout,
    BucketPlan,
    LayoutError,
    TensorSpec,
    plan_buckets,
)
from k2rl.weights.shm import SharedBuffer, create_buffer


def tensor_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """The row-major bytes of ``tensor`` as a flat uint8 tensor (a view when contiguous)."""
    return tensor.detach().contiguous().reshape(-1).view(torch.uint8)


def pack_bucket(bucket: BucketLayout, tensors: Mapping[str, torch.Tensor], out: torch.Tensor) -> None:
    """Write ``bucket``'s pieces from ``tensors`` into ``out[:bucket.byte_size]``, gaps zeroed."""
    if out.dtype != torch.uint8 or out.dim() != 1 or out.numel() < bucket.byte_size:
        raise ValueError(f"bucket {bucket.index} needs a 1-D uint8 buffer of at least {bucket.byte_size} bytes")
    position = 0
    for piece in bucket.pieces:
        tensor = tensors.get(piece.name)
        if tensor is None:
            raise KeyError(f"bucket {bucket.index} needs tensor {piece.name!r}, which was not given")
        if tuple(tensor.shape) != piece.spec.shape or tensor.dtype != piece.spec.dtype:
            raise LayoutError(f"tensor {piece.name!r} is {tuple(tensor.shape)} {tensor.dtype}, the plan says "
                              f"{piece.spec.shape} {piece.spec.dtype}")
        if piece.byte_offset > position:
            out[position:piece.byte_offset].zero_()
        source = tensor_bytes(tensor)[piece.tensor_byte_offset:piece.tensor_byte_offset + piece.byte_size]
        out[piece.byte_offset:piece.byte_offset + piece.byte_size].copy_(source)
        position = piece.byte_offset + piece.byte_size
    if bucket.byte_size > position:
        out[position:bucket.byte_size].zero_()


def bucket_offsets(plan: BucketPlan, alignment: int = DEFAULT_ALIGNMENT) -> list[int]:
    """Offsets of the buckets when laid back to back in one buffer, each aligned."""
    offsets, position = [], 0
    for bucket in plan.buckets:
        offsets.append(position)
        position = -(-(position + bucket.byte_size) // alignment) * alignment
    return offsets


@dataclass(frozen=True)
class StagedVersion:
    """A version packed in a staging buffer: the plan with checksums and where each bucket is."""

    plan: BucketPlan
    buffer: BufferDescriptor
    offsets: tuple[int, ...]  # byte 0 of bucket i is buffer byte offsets[i]

    def bucket_bytes(self, staging: torch.Tensor, index: int) -> torch.Tensor:
        start = self.offsets[index]
        return staging[start:start + self.plan.buckets[index].byte_size]


class WeightStager:
    """Packs a parameter set into one shared staging buffer, bucket by bucket.

    The buffer is reused across versions while it is large enough, so steady-state RL
    steps create no new segment. Not thread-safe; one per trainer rank.
    """

    def __init__(self, bucket_bytes: int = DEFAULT_BUCKET_BYTES,
                 algorithm: ChecksumAlgorithm = ChecksumAlgorithm.XXH3_64, tag: str = "stage") -> None:
        self.bucket_bytes = bucket_bytes
        self.algorithm = algorithm
        self._tag = tag
        self._buffer: SharedBuffer | None = None

    @property
    def staging(self) -> torch.Tensor:
        if self._buffer is None:
            raise RuntimeError("nothing staged yet")
        return self._buffer.tensor

    def stage(self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> StagedVersion:
        tensors = dict(named_tensors)
        plan = plan_buckets((TensorSpec.of(n, t) for n, t in tensors.items()), self.bucket_bytes)
        offsets = bucket_offsets(plan)
        needed = max(1, offsets[-1] + plan.buckets[-1].byte_size if plan.buckets else 1)
        if self._buffer is None or self._buffer.byte_size < needed:
            if self._buffer is not None:
                self._buffer.close()
            self._buffer = create_buffer(needed, self._tag)
        staging = self._buffer.tensor
        buckets = []
        for bucket, offset in zip(plan.buckets, offsets, strict=True):
            region = staging[offset:offset + bucket.byte_size]
            pack_bucket(bucket, tensors, region)
            buckets.append(bucket.with_checksum(compute_checksum(region, self.algorithm)))
        return StagedVersion(BucketPlan(tuple(buckets), plan.specs), describe_shm(self._buffer), tuple(offsets))

    def close(self) -> None:
        if self._buffer is not None:
            self._buffer.close()
            self._buffer = None
