"""Per-bucket checksums, as ``k2rl.common.v1.ChecksumAlgorithm`` defines them.

CRC32, SHA-256 and XXH3_64 hash host bytes; XXH3_64 runs several times faster than CRC32
(faster than a memcpy of the same bytes), so it is the default for host buffers, and it
streams (``StreamingChecksum``, ``hashed_copy``: hash each chunk of a copy while it is in
cache). SUM64 (wrapping sum of little-endian uint64 words, tail zero-padded) is one
reduction: numpy on the host (memory-bandwidth bound), torch on a CUDA device, so an IPC
bucket is verified without a device-to-host copy of its bytes.
"""

from __future__ import annotations

import enum
import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
import torch
import xxhash


class ChecksumAlgorithm(enum.Enum):
    CRC32 = "crc32"
    SHA256 = "sha256"
    SUM64 = "sum64"
    XXH3_64 = "xxh3_64"


class ChecksumMismatch(ValueError):
    """Bytes did not hash to the expected digest: a torn, stale or corrupted transfer."""


@dataclass(frozen=True)
class Checksum:
    algorithm: ChecksumAlgorithm
    digest: bytes

    def hex(self) -> str:
        return f"{self.algorithm.value}:{self.digest.hex()}"


def compute_checksum(data: torch.Tensor, algorithm: ChecksumAlgorithm = ChecksumAlgorithm.SUM64) -> Checksum:
    """Digest of the bytes of ``data`` (a contiguous uint8 tensor, on the host or a GPU)."""
    if data.dtype != torch.uint8 or data.dim() != 1 or not data.is_contiguous():
        raise TypeError("checksums are computed over a contiguous 1-D uint8 tensor of bytes")
    if data.device.type != "cpu":
        if algorithm is not ChecksumAlgorithm.SUM64:
            data = data.cpu()
        else:
            return Checksum(algorithm, _sum64_torch(data))
    array = data.numpy()
    if algorithm is ChecksumAlgorithm.CRC32:
        return Checksum(algorithm, zlib.crc32(array).to_bytes(4, "big"))
    if algorithm is ChecksumAlgorithm.XXH3_64:
        return Checksum(algorithm, xxhash.xxh3_64_digest(array))
    if algorithm is ChecksumAlgorithm.SHA256:
        return Checksum(algorithm, hashlib.sha256(array).digest())
    return Checksum(algorithm, _sum64_numpy(array))


class StreamingChecksum:
    """``compute_checksum`` of host bytes fed in order, in any number of pieces, so a receiver
    can hash each chunk while it is in cache from the copy that reads it anyway. SUM64 does
    not stream here (it is the device-side algorithm); ``streams`` says which do."""

    STREAMING = (ChecksumAlgorithm.CRC32, ChecksumAlgorithm.SHA256, ChecksumAlgorithm.XXH3_64)

    def __init__(self, algorithm: ChecksumAlgorithm) -> None:
        if algorithm not in self.STREAMING:
            raise ValueError(f"{algorithm.value} is not computed incrementally; use compute_checksum")
        self.algorithm = algorithm
        self._crc = 0
        self._state = (xxhash.xxh3_64() if algorithm is ChecksumAlgorithm.XXH3_64
                       else hashlib.sha256() if algorithm is ChecksumAlgorithm.SHA256 else None)

    @classmethod
    def streams(cls, algorithm: ChecksumAlgorithm) -> bool:
        return algorithm in cls.STREAMING

    def update(self, data: torch.Tensor) -> None:
        """Feed the next bytes (a contiguous 1-D uint8 host tensor)."""
        self.update_array(data.numpy())

    def update_array(self, array: np.ndarray) -> None:
        if self._state is None:
            self._crc = zlib.crc32(array, self._crc)
        else:
            self._state.update(array)

    def checksum(self) -> Checksum:
        if self._state is None:
            return Checksum(self.algorithm, self._crc.to_bytes(4, "big"))
        return Checksum(self.algorithm, self._state.digest())


_CHUNK_BYTES = 1 << 20  # hashed and copied together while in cache (L2 is ~1-2 MiB per core)


def hashed_copy(dst: torch.Tensor, src: torch.Tensor, digest: StreamingChecksum | None) -> None:
    """``dst.copy_(src)`` for 1-D byte tensors, feeding ``digest`` the same bytes chunk by
    chunk in the same pass (one side must be on the host when ``digest`` is given).

    Host chunks are copied by numpy: one thread, no parallel region per chunk (torch's
    intra-op threads cost more than the copy itself for 1 MiB on a busy machine)."""
    if digest is None or src.device.type != "cpu":
        dst.copy_(src)
        if digest is not None:
            digest.update(dst)  # device -> host copy: hash what landed
        return
    source = src.numpy()
    target = dst.numpy() if dst.device.type == "cpu" else None
    for start in range(0, len(source), _CHUNK_BYTES):
        chunk = source[start:start + _CHUNK_BYTES]
        digest.update_array(chunk)
        if target is not None:
            np.copyto(target[start:start + _CHUNK_BYTES], chunk)
        else:
            dst[start:start + _CHUNK_BYTES].copy_(src[start:start + _CHUNK_BYTES])


def verify_checksum(data: torch.Tensor, expected: Checksum, what: str = "bytes") -> None:
    actual = compute_checksum(data, expected.algorithm)
    if actual.digest != expected.digest:
        raise ChecksumMismatch(f"{what}: checksum {actual.hex()} != expected {expected.hex()}")


def _sum64_numpy(array: np.ndarray) -> bytes:
    body = len(array) - len(array) % 8
    total = int(array[:body].view("<u8").sum(dtype=np.uint64)) if body else 0
    if body != len(array):
        tail = np.zeros(8, dtype=np.uint8)
        tail[: len(array) - body] = array[body:]
        total += int(tail.view("<u8")[0])
    return (total % 2**64).to_bytes(8, "little")


def _sum64_torch(data: torch.Tensor) -> bytes:
    # int64 addition wraps in two's complement, which equals the uint64 sum mod 2**64.
    body = data.numel() - data.numel() % 8
    total = int(data[:body].view(torch.int64).sum().item()) if body else 0
    if body != data.numel():
        tail = torch.zeros(8, dtype=torch.uint8, device=data.device)
        tail[: data.numel() - body] = data[body:]
        total += int(tail.view(torch.int64).item())
    return (total % 2**64).to_bytes(8, "little")
