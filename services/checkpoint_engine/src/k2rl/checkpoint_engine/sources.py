"""Where an engine worker gathers a bucket from: a trainer rank's staging buffer (same node,
POSIX shm or CUDA IPC) or the safetensors files of a checkpoint on disk."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from k2rl.checkpoint_engine.planning import checkpoint_specs
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.weights import BucketLayout, OpenedBuffer, open_buffer, pack_bucket
from k2rl.weights import proto as wire


class TrainerSource:
    """Copies buckets out of trainer staging buffers; opens each buffer once per source."""

    def __init__(self) -> None:
        self._opened: dict[tuple[str, bytes], OpenedBuffer] = {}

    def copy_bucket(self, planned: ce.PlannedBucket, bucket: BucketLayout, out: torch.Tensor) -> None:
        handle = planned.source_buffer
        key = (handle.shm_name or handle.device_uuid, bytes(handle.cuda_ipc_descriptor))
        opened = self._opened.get(key)
        if opened is None or opened.descriptor.byte_size < handle.byte_size:
            opened = self._opened[key] = open_buffer(wire.descriptor_from_proto(handle))
        start = planned.source_byte_offset
        out[:bucket.byte_size].copy_(opened.tensor[start:start + bucket.byte_size])

    def close(self) -> None:
        for opened in self._opened.values():
            opened.close()
        self._opened.clear()


class CheckpointSource:
    """Reads the tensors of a bucket from the checkpoint's files (memory-mapped by safetensors).

    Each worker reads only the buckets it owns, so the cluster reads the checkpoint once
    (K2 section 3.3.3); the broadcast gives everyone the rest.
    """

    def __init__(self, path: str) -> None:
        self._files = {spec.name: file for spec, file in checkpoint_specs(Path(path))}
        self._handles: dict[Path, object] = {}

    def copy_bucket(self, bucket: BucketLayout, out: torch.Tensor) -> int:
        """Pack ``bucket`` into ``out``; return the bytes read from the files (a tensor split
        over several buckets is read whole for each of its pieces)."""
        tensors = {}
        for piece in bucket.pieces:
            file = self._files[piece.name]
            handle = self._handles.get(file)
            if handle is None:
                handle = self._handles[file] = safe_open(str(file), framework="pt")
            tensors[piece.name] = handle.get_tensor(piece.name)  # type: ignore[attr-defined]
        pack_bucket(bucket, tensors, out)
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def close(self) -> None:
        self._handles.clear()
