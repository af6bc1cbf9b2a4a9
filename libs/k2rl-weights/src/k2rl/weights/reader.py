"""Sink side: select a shard, verify buckets, copy out the slices a replica needs.

``select_shard`` answers "which buckets, and where in them, hold what I need" (the
checkpoint engine's GetShardPlan uses it, so do replicas). ``WeightReceiver`` runs one
update on a replica: it opens the engine's IPC slots, verifies each bucket's checksum in
place, copies out only the selected bytes, and hands over the complete set of named
tensors at ``commit`` - never a partial one, so the caller can apply it atomically.

Copies go straight into destination tensors: the caller's own (``begin(destinations=...)``,
e.g. the standby half of a double-buffered parameter set, reused every version) or, for
names without one, fresh tensors. Reusing storage matters on the host: first-touch page
faults make writing a new allocation several times slower than a memcpy. On the host the
checksum is computed in the same pass as the copy, chunk by chunk while each chunk is in
cache (one read of the slot instead of two); a mismatch surfaces at the end of the bucket,
when its bytes already sit in destinations the caller does not serve - nothing is handed
over, so the update stays all-or-nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from k2rl.weights.checksum import ChecksumMismatch, StreamingChecksum, hashed_copy, verify_checksum
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
        self._destinations: Mapping[str, torch.Tensor] = {}
        self._filling: dict[str, torch.Tensor] = {}  # name -> destination being written
        self._filled: dict[str, int] = {}  # name -> bytes of the (whole) tensor written so far
        self._assembly: dict[str, torch.Tensor] = {}  # split tensors cut by a selector: whole bytes, reused
        self._done: dict[str, torch.Tensor] = {}
        self.bytes_loaded = 0

    def begin(self, version: int, bucket_count: int, slots: Mapping[int, BufferDescriptor], verify: bool = True,
              destinations: Mapping[str, torch.Tensor] | None = None) -> None:
        """Start receiving ``version``; opens slot buffers (kept open while descriptors repeat).

        ``destinations``: tensors to write selected tensors into (name -> a contiguous tensor
        of the selected shape, dtype and this receiver's device). ``commit`` returns them;
        a tensor that does not match is replaced by a fresh one. The caller must not read
        them until ``commit`` and keeps them apart from what it serves (a failed update
        leaves them partly written).
        """
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
        self._destinations = destinations or {}

    def load_bucket(self, bucket: BucketLayout, slot: int, slot_byte_offset: int = 0) -> int:
        """Verify ``bucket`` (at ``slot_byte_offset`` in ``slot``) and copy out what is
        selected; return bytes copied.

        Raises ChecksumMismatch / LayoutError; the update is then dead (call ``abort``).
        """
        if self._version == 0:
            raise LayoutError("load_bucket before begin")
        if bucket.index != self._next_bucket:
            raise LayoutError(f"bucket {bucket.index} arrived, expected bucket {self._next_bucket}")
        opened = self._slots.get(slot)
        if opened is None:
            raise LayoutError(f"bucket {bucket.index} names slot {slot}, which begin did not announce")
        if slot_byte_offset < 0 or slot_byte_offset + bucket.byte_size > opened.tensor.numel():
            raise LayoutError(f"bucket {bucket.index} ({bucket.byte_size} bytes at offset {slot_byte_offset}) "
                              f"exceeds slot {slot}")
        data = opened.tensor[slot_byte_offset:slot_byte_offset + bucket.byte_size]
        digest = self._start_verification(bucket, data)
        copied, position = 0, 0
        for piece in sorted(bucket.pieces, key=lambda p: p.byte_offset):
            piece_bytes = data[piece.byte_offset:piece.byte_offset + piece.byte_size]
            if digest is not None:
                digest.update(data[position:piece.byte_offset])  # alignment gap
            selector = self._wanted(piece.name)
            if selector is None:
                if digest is not None:
                    digest.update(piece_bytes)
            else:
                selector.check(piece.spec)
                copied += self._copy_piece(piece, selector, piece_bytes, digest)
            position = piece.byte_offset + piece.byte_size
        if digest is not None:
            digest.update(data[position:])
            if digest.checksum() != bucket.checksum:
                raise ChecksumMismatch(f"bucket {bucket.index}: checksum {digest.checksum().hex()} != expected "
                                       f"{bucket.checksum.hex()}")  # type: ignore[union-attr]
        self._next_bucket += 1
        self.bytes_loaded += copied
        return copied

    def _start_verification(self, bucket: BucketLayout, data: torch.Tensor) -> StreamingChecksum | None:
        """Verify ``data`` now (device memory, SUM64), or return the digest to feed while copying."""
        if not self._verify:
            return None
        if bucket.checksum is None:
            raise ChecksumMismatch(f"bucket {bucket.index} carries no checksum and verification is on")
        if data.device.type == "cpu" and StreamingChecksum.streams(bucket.checksum.algorithm):
            return StreamingChecksum(bucket.checksum.algorithm)
        verify_checksum(data, bucket.checksum, f"bucket {bucket.index}")
        return None

    def _copy_piece(self, piece: TensorPiece, selector: Selector, piece_bytes: torch.Tensor,
                    digest: StreamingChecksum | None) -> int:
        """Write one piece into its destination (feeding ``digest`` all of its bytes); a
        tensor is done once all its bytes are in."""
        if selector.dim is not None and digest is not None:
            digest.update(piece_bytes)  # a slice is cut from typed views below, not copied byte for byte
            digest = None
        if piece.whole:
            out = self._destination(piece.spec, selector)
            if selector.dim is None:
                hashed_copy(_as_bytes(out), piece_bytes, digest)
            else:
                out.copy_(selector.apply(typed_view(piece_bytes, piece.spec)))
            self._done[piece.name] = out
            return out.numel() * out.element_size()
        if selector.dim is None:  # a whole tensor split over buckets: each piece lands in place
            target = self._filling.get(piece.name)
            if target is None:
                target = self._filling[piece.name] = _as_bytes(self._destination(piece.spec, selector))
        else:  # a slice of a split tensor: assemble the whole bytes first, then cut
            target = self._assembly.get(piece.name)
            if target is None or target.numel() != piece.spec.nbytes:
                target = self._assembly[piece.name] = torch.empty(piece.spec.nbytes, dtype=torch.uint8)
            self._filling.setdefault(piece.name, target)
        hashed_copy(target[piece.tensor_byte_offset:piece.tensor_byte_offset + piece.byte_size], piece_bytes, digest)
        self._filled[piece.name] = self._filled.get(piece.name, 0) + piece.byte_size
        if self._filled[piece.name] == piece.spec.nbytes:
            del self._filling[piece.name], self._filled[piece.name]
            if selector.dim is None:
                self._done[piece.name] = typed_view(target, piece.spec)
            else:
                out = self._destination(piece.spec, selector)
                out.copy_(selector.apply(typed_view(target, piece.spec)))
                self._done[piece.name] = out
        return piece.byte_size

    def _destination(self, spec: TensorSpec, selector: Selector) -> torch.Tensor:
        """The caller's tensor for this selection when it fits, else a new one."""
        shape = list(spec.shape)
        if selector.dim is not None:
            shape[selector.dim] = selector.length
        given = self._destinations.get(spec.name)
        if (given is not None and list(given.shape) == shape and given.dtype == spec.dtype
                and given.device == self._device and given.is_contiguous()):
            return given
        return torch.empty(shape, dtype=spec.dtype, device=self._device)

    def commit(self, version: int, bucket_count: int) -> dict[str, torch.Tensor]:
        """Every bucket arrived and every selected tensor is complete: hand them over."""
        if version != self._version or bucket_count != self._bucket_count or self._next_bucket != bucket_count:
            raise LayoutError(f"commit of version {version} with {bucket_count} buckets does not match the update "
                              f"in progress (version {self._version}, {self._next_bucket}/{self._bucket_count} buckets)")
        missing = sorted(set(self._selectors) - set(self._done)) + sorted(self._filling)
        if missing:
            raise LayoutError(f"version {version} is missing selected tensors: {', '.join(missing[:5])}")
        result = dict(self._done)
        self._reset()
        return result

    def abort(self) -> None:
        """Drop a partial update (nothing of it was handed over)."""
        self._reset()

    def close(self) -> None:
        self._reset()
        self._assembly.clear()
        for opened in self._slots.values():
            opened.close()
        self._slots.clear()

    def _wanted(self, name: str) -> Selector | None:
        if not self._selectors:
            return Selector(name)
        return self._selectors.get(name)

    def _reset(self) -> None:
        self._version = self._bucket_count = self._next_bucket = 0
        self._destinations = {}
        self._filling.clear()
        self._filled.clear()
        self._done.clear()
        self.bytes_loaded = 0


def _as_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """A flat uint8 view of a contiguous tensor's storage (no copy)."""
    return tensor.view(-1).view(torch.uint8)
