"""Where an engine worker gathers a bucket from: a trainer rank's staging buffer (same node,
POSIX shm or CUDA IPC) or the safetensors files of a checkpoint on disk."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from k2rl.checkpoint_engine.planning import checkpoint_specs
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.common.v1 import common_pb2
from k2rl.weights import BucketLayout, OpenedBuffer, StreamingChecksum, hashed_copy, open_buffer
from k2rl.weights import proto as wire


class TrainerSource:
    """Copies buckets out of trainer staging buffers. A worker keeps one for its lifetime:
    trainers reuse their staging buffers across versions, and mapping one afresh for every
    version would fault in all of its pages again."""

    def __init__(self) -> None:
        self._opened: dict[tuple[str, bytes], OpenedBuffer] = {}

    def keep_only(self, planned: Iterable[ce.PlannedBucket]) -> None:
        """Unmap buffers that a new plan no longer names (a trainer replaced them)."""
        named = {_key(p.source_buffer) for p in planned}
        for key in set(self._opened) - named:
            self._opened.pop(key).close()

    def copy_bucket(self, planned: ce.PlannedBucket, bucket: BucketLayout, out: torch.Tensor,
                    digest: StreamingChecksum | None = None) -> None:
        """Copy the bucket's bytes into ``out``, feeding ``digest`` in the same pass."""
        handle = planned.source_buffer
        key = _key(handle)
        opened = self._opened.get(key)
        if opened is None or opened.descriptor.byte_size < handle.byte_size:
            opened = self._opened[key] = open_buffer(wire.descriptor_from_proto(handle))
        start = planned.source_byte_offset
        hashed_copy(out[:bucket.byte_size], opened.tensor[start:start + bucket.byte_size], digest)

    def close(self) -> None:
        for opened in self._opened.values():
            opened.close()
        self._opened.clear()


def _key(handle: common_pb2.IpcHandle) -> tuple[str, bytes]:
    return handle.shm_name or handle.device_uuid, bytes(handle.cuda_ipc_descriptor)


class CheckpointSource:
    """Reads the bytes of a bucket's pieces straight from the checkpoint's files.

    Each worker reads only the buckets it owns, and of a tensor split over several buckets
    only the byte range of each piece (positions from the safetensors headers), so the
    cluster reads the checkpoint exactly once (K2 section 3.3.3); the broadcast gives
    everyone the rest.
    """

    def __init__(self, path: str) -> None:
        self._tensors = {stored.spec.name: stored for stored in checkpoint_specs(Path(path))}
        self._fds: dict[Path, int] = {}

    def copy_bucket(self, bucket: BucketLayout, out: torch.Tensor) -> int:
        """Pack ``bucket`` into ``out`` (gaps zeroed, as ``pack_bucket`` does); return the
        bytes read from the files."""
        host = out if out.device.type == "cpu" else torch.empty(bucket.byte_size, dtype=torch.uint8)
        position = 0
        for piece in bucket.pieces:
            host[position:piece.byte_offset].zero_()
            stored = self._tensors[piece.name]
            self._read(stored.file, stored.data_offset + piece.tensor_byte_offset,
                       host[piece.byte_offset:piece.byte_offset + piece.byte_size])
            position = piece.byte_offset + piece.byte_size
        host[position:bucket.byte_size].zero_()
        if host is not out:
            out[:bucket.byte_size].copy_(host)
        return sum(piece.byte_size for piece in bucket.pieces)

    def _read(self, file: Path, offset: int, into: torch.Tensor) -> None:
        fd = self._fds.get(file)
        if fd is None:
            fd = self._fds[file] = os.open(file, os.O_RDONLY)
        view = memoryview(into.numpy())
        done = 0
        while done < len(view):
            count = os.preadv(fd, [view[done:]], offset + done)
            if count == 0:
                raise OSError(f"{file} ends before byte {offset + len(view)}: truncated checkpoint?")
            done += count

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
