"""Sink side: select a shard, verify buckets, copy out the slices a replica needs.

``select_shard`` answers "which buckets, and where in them, hold what I need" (the
checkpoint engine's GetShardPlan uses it, so do replicas). ``WeightReceiver`` runs one
update on a replica: it opens the engine's IPC slots, verifies each bucket's checksum in
place, copies out only the selected bytes, and hands over the complete set of named
tensors at ``commit`` - never a partial one, so the caller can apply it atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from k2rl.weights.checksum import ChecksumMismatch, verify_checksum
from k2rl.weights.ipc import BufferDescriptor, OpenedBuffer, open_buffer
from k2rl.weights.layout import BucketLayout, LayoutError, TensorPiece, TensorSpec


@dataclass(frozen=True)
class Selector:
    """A whole tensor (``dim`` None) or ``length`` rows from ``start`` along ``dim``."""

    name: str
    dim: int | None = None
    start: int = 0
    length: int = 0

    def check(self, spec: TensorSpec) -> None:
        if self.dim is None:
            return
        if not 0 <= self.dim < len(spec.shape):
            raise LayoutError(f"selector for {self.name!r}: dim {self.dim} out of range for shape {spec.shape}")
        if self.length <= 0 or self.start + self.length > spec.shape[self.dim]:
            raise LayoutError(f"selector for {self.name!r}: [{self.start}, {self.start + self.length}) "
                              f"out of range for size {spec.shape[self.dim]} of dim {self.dim}")

    def apply(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor if self.dim is None else tensor.narrow(self.dim, self.start, self.length)


@dataclass(frozen=True)
class ShardEntry:
    selector: Selector
    bucket_index: int
    piece: TensorPiece


def select_shard(buckets: Sequence[BucketLayout], selectors: Iterable[Selector] = ()) -> list[ShardEntry]:
    """Entries locating every selected tensor (one per piece); empty selectors = everything."""
    by_name: dict[str, list[tuple[int, TensorPiece]]] = {}
    for bucket in buckets:
        for piece in bucket.pieces:
            by_name.setdefault(piece.name, []).append((bucket.index, piece))
    chosen = list(selectors) or [Selector(name) for name in by_name]
    entries: list[ShardEntry] = []
    seen: set[str] = set()
    for selector in chosen:
        if selector.name in seen:
            raise LayoutError(f"tensor {selector.name!r} is selected twice")
        seen.add(selector.name)
        located = by_name.get(selector.name)
        if located is None:
            raise LayoutError(f"tensor {selector.name!r} is not in this version")
        selector.check(located[0][1].spec)
        entries.extend(ShardEntry(selector, index, piece) for index, piece in located)
    return entries


def typed_view(data: torch.Tensor, spec: TensorSpec) -> torch.Tensor:
    """View bytes holding a whole tensor as that tensor (no copy)."""
    return data.view(spec.dtype).view(spec.shape)


class WeightReceiver:
    """One replica's side of weight updates; reusable across versions.

    Not thread-safe: one update at a time (the UpdateWeights stream is sequential).
    """

    def __init__(self, selectors: Iterable[Selector] = (), device: torch.device | str = "cpu") -> None:
        self._selectors = {s.name: s for s in selectors}
        self._device = torch.device(device)
        self._slots: dict[int, OpenedBuffer] = {}
        self._version = 0
        self._bucket_count = 0
        self._next_bucket = 0
        self._verify = True
        self._assembling: dict[str, torch.Tensor] = {}  # name -> whole-tensor bytes, pieces filled in
        self._filled: dict[str, int] = {}
        self._done: dict[str, torch.Tensor] = {}
        self.bytes_loaded = 0

    def begin(self, version: int, bucket_count: int, slots: Mapping[int, BufferDescriptor], verify: bool = True) -> None:
        """Start receiving ``version``; opens slot buffers (kept open while descriptors repeat)."""
        self.abort()
        for slot, descriptor in slots.items():
            held = self._slots.get(slot)
            if held is not None and held.descriptor == descriptor:
                continue
            if held is not None:
                held.close()
            self._slots[slot] = open_buffer(descriptor)
        for slot in set(self._slots) - set(slots):
            self._slots.pop(slot).close()
        self._version, self._bucket_count, self._verify = version, bucket_count, verify

    def load_bucket(self, bucket: BucketLayout, slot: int) -> int:
        """Verify ``bucket`` in ``slot`` and copy out what is selected; return bytes copied.

        Raises ChecksumMismatch / LayoutError; the update is then dead (call ``abort``).
        """
        if self._version == 0:
            raise LayoutError("load_bucket before begin")
        if bucket.index != self._next_bucket:
            raise LayoutError(f"bucket {bucket.index} arrived, expected bucket {self._next_bucket}")
        opened = self._slots.get(slot)
        if opened is None:
            raise LayoutError(f"bucket {bucket.index} names slot {slot}, which begin did not announce")
        if bucket.byte_size > opened.tensor.numel():
            raise LayoutError(f"bucket {bucket.index} ({bucket.byte_size} bytes) exceeds slot {slot}")
        data = opened.tensor[:bucket.byte_size]
        if self._verify:
            if bucket.checksum is None:
                raise ChecksumMismatch(f"bucket {bucket.index} carries no checksum and verification is on")
            verify_checksum(data, bucket.checksum, f"bucket {bucket.index}")
        copied = 0
        for piece in bucket.pieces:
            selector = self._wanted(piece.name)
            if selector is None:
                continue
            selector.check(piece.spec)
            piece_bytes = data[piece.byte_offset:piece.byte_offset + piece.byte_size]
            if piece.whole:
                self._done[piece.name] = selector.apply(typed_view(piece_bytes, piece.spec)).to(self._device, copy=True)
                copied += self._done[piece.name].numel() * self._done[piece.name].element_size()
                continue
            whole = self._assembling.get(piece.name)
            if whole is None:
                whole = self._assembling[piece.name] = torch.empty(piece.spec.nbytes, dtype=torch.uint8)
                self._filled[piece.name] = 0
            whole[piece.tensor_byte_offset:piece.tensor_byte_offset + piece.byte_size].copy_(piece_bytes)
            self._filled[piece.name] += piece.byte_size
            copied += piece.byte_size
            if self._filled[piece.name] == piece.spec.nbytes:
                assembled = typed_view(self._assembling.pop(piece.name), piece.spec)
                self._done[piece.name] = selector.apply(assembled).to(self._device, copy=True)
        self._next_bucket += 1
        self.bytes_loaded += copied
        return copied

    def commit(self, version: int, bucket_count: int) -> dict[str, torch.Tensor]:
        """Every bucket arrived and every selected tensor is complete: hand them over."""
        if version != self._version or bucket_count != self._bucket_count or self._next_bucket != bucket_count:
            raise LayoutError(f"commit of version {version} with {bucket_count} buckets does not match the update "
                              f"in progress (version {self._version}, {self._next_bucket}/{self._bucket_count} buckets)")
        missing = sorted(set(self._selectors) - set(self._done)) + sorted(self._assembling)
        if missing:
            raise LayoutError(f"version {version} is missing selected tensors: {', '.join(missing[:5])}")
        result = {name: tensor.contiguous() for name, tensor in self._done.items()}
        self._reset()
        return result

    def abort(self) -> None:
        """Drop a partial update (nothing of it was handed over)."""
        self._reset()

    def close(self) -> None:
        self._reset()
        for opened in self._slots.values():
            opened.close()
        self._slots.clear()

    def _wanted(self, name: str) -> Selector | None:
        if not self._selectors:
            return Selector(name)
        return self._selectors.get(name)

    def _reset(self) -> None:
        self._version = self._bucket_count = self._next_bucket = 0
        self._assembling.clear()
        self._filled.clear()
        self._done.clear()
        self.bytes_loaded = 0
