"""Checksums match their definitions in common.proto and detect corruption."""

import hashlib
import zlib

import numpy as np
import pytest
import torch

from k2rl.weights import ChecksumAlgorithm, ChecksumMismatch, compute_checksum, verify_checksum


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4096 + 3])
def test_digests_follow_the_wire_definitions(size: int) -> None:
    data = torch.randint(0, 256, (size,), dtype=torch.uint8)
    raw = data.numpy().tobytes()
    assert compute_checksum(data, ChecksumAlgorithm.CRC32).digest == zlib.crc32(raw).to_bytes(4, "big")
    assert compute_checksum(data, ChecksumAlgorithm.SHA256).digest == hashlib.sha256(raw).digest()
    padded = raw + b"\0" * (-len(raw) % 8)
    words = sum(int.from_bytes(padded[i:i + 8], "little") for i in range(0, len(padded), 8))
    assert compute_checksum(data, ChecksumAlgorithm.SUM64).digest == (words % 2**64).to_bytes(8, "little")


def test_sum64_wraps_instead_of_overflowing() -> None:
    data = torch.from_numpy(np.array([2**64 - 1, 2**64 - 1], dtype=np.uint64).view(np.uint8).copy())
    assert compute_checksum(data, ChecksumAlgorithm.SUM64).digest == ((2 * (2**64 - 1)) % 2**64).to_bytes(8, "little")


@pytest.mark.parametrize("algorithm", list(ChecksumAlgorithm))
def test_a_single_flipped_byte_is_detected(algorithm: ChecksumAlgorithm) -> None:
    data = torch.randint(0, 256, (10_000,), dtype=torch.uint8)
    expected = compute_checksum(data, algorithm)
    verify_checksum(data, expected)
    data[1234] ^= 0x10
    with pytest.raises(ChecksumMismatch, match="bucket 3"):
        verify_checksum(data, expected, "bucket 3")


def test_rejects_non_byte_tensors() -> None:
    with pytest.raises(TypeError):
        compute_checksum(torch.zeros(4))
