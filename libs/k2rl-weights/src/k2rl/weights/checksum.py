"""Per-bucket checksums, as ``k2rl.common.v1.ChecksumAlgorithm`` defines them.

CRC32 and SHA-256 hash host bytes. SUM64 (wrapping sum of little-endian uint64 words, tail
zero-padded) is one reduction: numpy on the host (memory-bandwidth bound), torch on a CUDA
device, so an IPC bucket is verified without a device-to-host copy of its bytes.
"""

from __future__ import annotations

import enum
import hashlib
import zlib
from dataclasses import dataclass

import numpy as np
import torch


class ChecksumAlgorithm(enum.Enum):
    CRC32 = "crc32"
    SHA256 = "sha256"
    SUM64 = "sum64"


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
    if algorithm is ChecksumAlgorithm.SHA256:
        return Checksum(algorithm, hashlib.sha256(array).digest())
    return Checksum(algorithm, _sum64_numpy(array))


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
