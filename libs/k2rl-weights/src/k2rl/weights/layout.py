"""Bucket layout: where every tensor's bytes sit in the buckets of one weight version.

A version is cut into buckets of at most ``bucket_bytes`` (the size of the checkpoint
engine's IPC buffers, K2 Appendix G). Tensors are packed in the given order, each starting
at an ``alignment``-byte offset so a receiver can view it as a typed tensor without a copy.
A tensor larger than a bucket (K2's embedding is 2.3 GB) is split into pieces that fill
consecutive buckets; ``tensor_byte_offset`` says where a piece starts within the tensor.

Everything here is pure metadata: no tensor is touched.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch

from k2rl.weights.checksum import Checksum
from k2rl.weights.dtypes import dtype_name, element_size

DEFAULT_ALIGNMENT = 256
DEFAULT_BUCKET_BYTES = 64 * 2**20


class LayoutError(ValueError):
    """A bucket plan is inconsistent (overlaps, gaps in indices, sizes that do not add up)."""


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor's metadata: enough to lay it out and to rebuild it on the other side."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype

    @classmethod
    def of(cls, name: str, tensor: torch.Tensor) -> TensorSpec:
        return cls(name, tuple(tensor.shape), tensor.dtype)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * element_size(self.dtype)


@dataclass(frozen=True)
class TensorPiece:
    """A tensor, or a contiguous byte range of it, placed inside one bucket."""

    spec: TensorSpec
    byte_offset: int  # within the bucket
    byte_size: int
    tensor_byte_offset: int = 0  # within the tensor's row-major bytes
    checksum: Checksum | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def whole(self) -> bool:
        return self.tensor_byte_offset == 0 and self.byte_size == self.spec.nbytes


@dataclass(frozen=True)
class BucketLayout:
    """One bucket: its index in the version, used bytes, pieces ordered by offset, checksum."""

    index: int
    byte_size: int
    pieces: tuple[TensorPiece, ...]
    checksum: Checksum | None = None

    def with_checksum(self, checksum: Checksum) -> BucketLayout:
        return replace(self, checksum=checksum)


@dataclass(frozen=True)
class BucketPlan:
    """Every bucket of one version, plus the derived totals."""

    buckets: tuple[BucketLayout, ...]
    specs: Mapping[str, TensorSpec] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(b.byte_size for b in self.buckets)

    @property
    def max_bucket_bytes(self) -> int:
        return max((b.byte_size for b in self.buckets), default=0)


def _align(offset: int, alignment: int) -> int:
    return -(-offset // alignment) * alignment


def plan_buckets(
    specs: Iterable[TensorSpec], bucket_bytes: int = DEFAULT_BUCKET_BYTES, alignment: int = DEFAULT_ALIGNMENT
) -> BucketPlan:
    """Pack ``specs`` in order into buckets of at most ``bucket_bytes``.

    Tensors that fit are never split; one that does not fit in the current bucket starts a
    new one; one larger than a whole bucket is cut into element-aligned pieces.
    """
    if bucket_bytes <= 0 or alignment <= 0 or bucket_bytes % alignment:
        raise LayoutError(f"bucket_bytes ({bucket_bytes}) must be a positive multiple of alignment ({alignment})")
    buckets: list[BucketLayout] = []
    pieces: list[TensorPiece] = []
    used = 0
    seen: dict[str, TensorSpec] = {}

    def close() -> None:
        nonlocal pieces, used
        if pieces:
            buckets.append(BucketLayout(len(buckets), used, tuple(pieces)))
        pieces, used = [], 0

    for spec in specs:
        if spec.name in seen:
            raise LayoutError(f"tensor {spec.name!r} appears twice")
        dtype_name(spec.dtype)  # reject dtypes the wire cannot name, before any layout
        seen[spec.name] = spec
        size = spec.nbytes
        if size == 0:
            pieces.append(TensorPiece(spec, _align(used, alignment) if pieces else 0, 0))
            continue
        start = _align(used, alignment)
        if start + size <= bucket_bytes:
            pieces.append(TensorPiece(spec, start, size))
            used = start + size
            continue
        if size <= bucket_bytes:
            close()
            pieces.append(TensorPiece(spec, 0, size))
            used = size
            continue
        # Larger than a bucket: whole elements per piece, each piece fills a fresh bucket.
        close()
        step = bucket_bytes - bucket_bytes % element_size(spec.dtype)
        for offset in range(0, size, step):
            length = min(step, size - offset)
            buckets.append(BucketLayout(len(buckets), length, (TensorPiece(spec, 0, length, offset),)))
    close()
    return BucketPlan(tuple(buckets), seen)


def validate_plan(buckets: Sequence[BucketLayout], max_bucket_bytes: int | None = None) -> dict[str, TensorSpec]:
    """Check a plan received from elsewhere; return name -> spec. Raises LayoutError.

    Indices dense from 0, pieces inside their bucket and not overlapping, each tensor's
    pieces covering exactly [0, nbytes) with one consistent shape and dtype.
    """
    specs: dict[str, TensorSpec] = {}
    covered: dict[str, list[tuple[int, int]]] = {}
    for position, bucket in enumerate(buckets):
        if bucket.index != position:
            raise LayoutError(f"bucket indices must be dense from 0: position {position} has index {bucket.index}")
        if max_bucket_bytes is not None and bucket.byte_size > max_bucket_bytes:
            raise LayoutError(f"bucket {bucket.index} holds {bucket.byte_size} bytes, above the buffer size {max_bucket_bytes}")
        end_of_previous = 0
        for piece in sorted(bucket.pieces, key=lambda p: p.byte_offset):
            where = f"bucket {bucket.index}, tensor {piece.name!r}"
            if piece.byte_offset < end_of_previous:
                raise LayoutError(f"{where}: overlaps the previous tensor")
            if piece.byte_offset + piece.byte_size > bucket.byte_size:
                raise LayoutError(f"{where}: ends at {piece.byte_offset + piece.byte_size}, past the bucket's {bucket.byte_size} bytes")
            if piece.byte_size and piece.byte_offset % element_size(piece.spec.dtype):
                raise LayoutError(f"{where}: offset {piece.byte_offset} not aligned to its element size")
            end_of_previous = piece.byte_offset + piece.byte_size
            known = specs.setdefault(piece.name, piece.spec)
            if known != piece.spec:
                raise LayoutError(f"{where}: shape/dtype {piece.spec} differs from an earlier piece {known}")
            covered.setdefault(piece.name, []).append((piece.tensor_byte_offset, piece.byte_size))
    for name, ranges in covered.items():
        position = 0
        for start, size in sorted(ranges):
            if start != position:
                raise LayoutError(f"tensor {name!r}: pieces {'overlap' if start < position else 'leave a gap'} at byte {position}")
            position = start + size
        if position != specs[name].nbytes:
            raise LayoutError(f"tensor {name!r}: pieces cover {position} of {specs[name].nbytes} bytes")
    return specs
