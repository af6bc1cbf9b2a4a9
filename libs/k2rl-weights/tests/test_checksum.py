"""Checksums match their definitions in common.proto and detect corruption."""

import hashlib
import zlib

import numpy as np
import pytest
import torch
import xxhash

from k2rl.weights import (
    ChecksumAlgorithm,
    ChecksumMismatch,
    StreamingChecksum,
    compute_checksum,
    hashed_copy,
    verify_checksum,
)


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 4096 + 3])
def test_digests_follow_the_wire_definitions(size: int) -> None:
    data = torch.randint(0, 256, (size,), dtype=torch.uint8)
    raw = data.numpy().tobytes()
    assert compute_checksum(data, ChecksumAlgorithm.CRC32).digest == zlib.crc32(raw).to_bytes(4, "big")
    assert compute_checksum(data, ChecksumAlgorithm.SHA256).digest == hashlib.sha256(raw).digest()
    padded = raw + b"\0" * (-len(raw) % 8)
    words = sum(int.from_bytes(padded[i:i + 8], "little") for i in range(0, len(padded), 8))
    assert compute_checksum(data, ChecksumAlgorithm.SUM64).digest == (words % 2**64).to_bytes(8, "little")
    assert compute_checksum(data, ChecksumAlgorithm.XXH3_64).digest == xxhash.xxh3_64(raw, seed=0).digest()


def test_xxh3_64_matches_the_published_test_vector() -> None:
    empty = torch.empty(0, dtype=torch.uint8)
    assert compute_checksum(empty, ChecksumAlgorithm.XXH3_64).digest == bytes.fromhex("2d06800538d394c2")


@pytest.mark.parametrize("algorithm", StreamingChecksum.STREAMING)
def test_a_streamed_checksum_equals_the_one_pass_checksum_whatever_the_pieces(algorithm: ChecksumAlgorithm) -> None:
    data = torch.randint(0, 256, (10_007,), dtype=torch.uint8)
    streamed = StreamingChecksum(algorithm)
    for start, end in [(0, 0), (0, 3), (3, 4099), (4099, 4099), (4099, 10_007)]:
        streamed.update(data[start:end])
    assert streamed.checksum() == compute_checksum(data, algorithm)
    with pytest.raises(ValueError, match="sum64"):
        StreamingChecksum(ChecksumAlgorithm.SUM64)


def test_a_hashed_copy_copies_the_bytes_and_hashes_exactly_them() -> None:
    src = torch.randint(0, 256, ((3 << 20) + 11,), dtype=torch.uint8)  # several chunks and a partial one
    dst = torch.zeros_like(src)
    digest = StreamingChecksum(ChecksumAlgorithm.XXH3_64)
    hashed_copy(dst, src, digest)
    assert torch.equal(dst, src)
    assert digest.checksum() == compute_checksum(src, ChecksumAlgorithm.XXH3_64)


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
