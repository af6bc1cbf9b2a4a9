"""Wire conversions round-trip and reject malformed metadata."""

import pytest
import torch

from k2rl.common.v1 import common_pb2
from k2rl.weights import DEFAULT_ALIGNMENT, Selector, WeightStager, select_shard
from k2rl.weights import proto as wire
from k2rl.weights.dtypes import SUPPORTED_DTYPES


@pytest.mark.parametrize("dtype", SUPPORTED_DTYPES)
def test_every_supported_dtype_round_trips(dtype: torch.dtype) -> None:
    assert wire.dtype_from_proto(wire.dtype_to_proto(dtype)) is dtype


def test_staged_version_round_trips_through_planned_buckets() -> None:
    stager = WeightStager(bucket_bytes=4 * DEFAULT_ALIGNMENT)
    try:
        staged = stager.stage({"w": torch.randn(10, 30), "b": torch.zeros(3, dtype=torch.bfloat16)})
        planned = wire.planned_buckets(staged, source_worker_id="trainer-0")
        assert [p.source_byte_offset for p in planned] == list(staged.offsets)
        assert planned[0].source_buffer.shm_name == staged.buffer.shm_name
        assert wire.descriptor_from_proto(planned[0].source_buffer) == staged.buffer
        assert wire.buckets_from_proto(p.bucket for p in planned) == list(staged.plan.buckets)
    finally:
        stager.close()
    entries = select_shard(staged.plan.buckets, [Selector("w", dim=1, start=2, length=5)])
    [message] = wire.shard_entries_to_proto(entries[:1])
    assert wire.selector_from_proto(message.selector) == Selector("w", 1, 2, 5)
    assert wire.selector_from_proto(wire.selector_to_proto(Selector("b"))) == Selector("b")


def test_malformed_messages_are_rejected() -> None:
    with pytest.raises(ValueError, match="unset or unknown"):
        wire.dtype_from_proto(common_pb2.TENSOR_DTYPE_UNSPECIFIED)
    with pytest.raises(ValueError, match="4 bytes"):
        wire.checksum_from_proto(common_pb2.Checksum(algorithm=common_pb2.CHECKSUM_ALGORITHM_CRC32, digest=b"\0"))
    assert wire.checksum_from_proto(common_pb2.Checksum()) is None
    with pytest.raises(ValueError, match="shm_name"):
        wire.descriptor_from_proto(common_pb2.IpcHandle(kind=common_pb2.IPC_HANDLE_KIND_POSIX_SHM, byte_size=4))
    with pytest.raises(ValueError, match="negative"):
        wire.piece_from_proto(common_pb2.TensorMeta(name="x", shape=[-1], dtype=common_pb2.TENSOR_DTYPE_FLOAT32))
