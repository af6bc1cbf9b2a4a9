"""Conversions between k2rl.weights types and their wire messages (k2rl.common.v1 etc.).

Only metadata crosses here; tensors never do (DESIGN.md section 2).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2
from k2rl.common.v1 import common_pb2
from k2rl.weights.checksum import Checksum, ChecksumAlgorithm
from k2rl.weights.dtypes import dtype_from_name, dtype_name
from k2rl.weights.ipc import BufferDescriptor, IpcKind
from k2rl.weights.layout import BucketLayout, TensorPiece, TensorSpec
from k2rl.weights.reader import Selector, ShardEntry
from k2rl.weights.writer import StagedVersion

_ALGORITHM_TO_PROTO = {
    ChecksumAlgorithm.CRC32: common_pb2.CHECKSUM_ALGORITHM_CRC32,
    ChecksumAlgorithm.SHA256: common_pb2.CHECKSUM_ALGORITHM_SHA256,
    ChecksumAlgorithm.SUM64: common_pb2.CHECKSUM_ALGORITHM_SUM64,
    ChecksumAlgorithm.XXH3_64: common_pb2.CHECKSUM_ALGORITHM_XXH3_64,
}
_ALGORITHM_FROM_PROTO = {v: k for k, v in _ALGORITHM_TO_PROTO.items()}
_DIGEST_BYTES = {ChecksumAlgorithm.CRC32: 4, ChecksumAlgorithm.SHA256: 32, ChecksumAlgorithm.SUM64: 8,
                 ChecksumAlgorithm.XXH3_64: 8}
_KIND_TO_PROTO = {IpcKind.POSIX_SHM: common_pb2.IPC_HANDLE_KIND_POSIX_SHM, IpcKind.CUDA_IPC: common_pb2.IPC_HANDLE_KIND_CUDA_IPC}
_KIND_FROM_PROTO = {v: k for k, v in _KIND_TO_PROTO.items()}


def dtype_to_proto(dtype: torch.dtype) -> int:
    return common_pb2.TensorDtype.Value("TENSOR_DTYPE_" + dtype_name(dtype).upper())


def dtype_from_proto(value: int) -> torch.dtype:
    if value == common_pb2.TENSOR_DTYPE_UNSPECIFIED or value not in common_pb2.TensorDtype.values():
        raise ValueError(f"tensor dtype {value} is unset or unknown")
    return dtype_from_name(common_pb2.TensorDtype.Name(value).removeprefix("TENSOR_DTYPE_").lower())


def checksum_to_proto(checksum: Checksum | None) -> common_pb2.Checksum | None:
    if checksum is None:
        return None
    return common_pb2.Checksum(algorithm=_ALGORITHM_TO_PROTO[checksum.algorithm], digest=checksum.digest)


def checksum_from_proto(message: common_pb2.Checksum) -> Checksum | None:
    """None when unset; ValueError for an unknown algorithm or a digest of the wrong length."""
    if message.algorithm == common_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED:
        return None
    algorithm = _ALGORITHM_FROM_PROTO.get(message.algorithm)
    if algorithm is None:
        raise ValueError(f"unknown checksum algorithm {message.algorithm}")
    if len(message.digest) != _DIGEST_BYTES[algorithm]:
        raise ValueError(f"{algorithm.value} digest must be {_DIGEST_BYTES[algorithm]} bytes, got {len(message.digest)}")
    return Checksum(algorithm, bytes(message.digest))


def piece_to_proto(piece: TensorPiece) -> common_pb2.TensorMeta:
    return common_pb2.TensorMeta(
        name=piece.name, shape=list(piece.spec.shape), dtype=dtype_to_proto(piece.spec.dtype),
        byte_offset=piece.byte_offset, byte_size=piece.byte_size, checksum=checksum_to_proto(piece.checksum),
        tensor_byte_offset=piece.tensor_byte_offset,
    )


def piece_from_proto(message: common_pb2.TensorMeta) -> TensorPiece:
    if not message.name:
        raise ValueError("tensor name is empty")
    if any(d < 0 for d in message.shape):
        raise ValueError(f"tensor {message.name!r} has a negative dimension in {list(message.shape)}")
    spec = TensorSpec(message.name, tuple(message.shape), dtype_from_proto(message.dtype))
    return TensorPiece(spec, message.byte_offset, message.byte_size, message.tensor_byte_offset,
                       checksum_from_proto(message.checksum))


def bucket_to_proto(bucket: BucketLayout) -> common_pb2.WeightBucket:
    return common_pb2.WeightBucket(index=bucket.index, byte_size=bucket.byte_size,
                                   tensors=[piece_to_proto(p) for p in bucket.pieces],
                                   checksum=checksum_to_proto(bucket.checksum))


def bucket_from_proto(message: common_pb2.WeightBucket) -> BucketLayout:
    pieces = tuple(piece_from_proto(t) for t in message.tensors)
    return BucketLayout(message.index, message.byte_size, pieces, checksum_from_proto(message.checksum))


def descriptor_to_proto(descriptor: BufferDescriptor) -> common_pb2.IpcHandle:
    return common_pb2.IpcHandle(kind=_KIND_TO_PROTO[descriptor.kind], cuda_ipc_descriptor=descriptor.cuda_ipc_descriptor,
                                shm_name=descriptor.shm_name, byte_size=descriptor.byte_size, node=descriptor.node,
                                device_uuid=descriptor.device_uuid)


def descriptor_from_proto(message: common_pb2.IpcHandle) -> BufferDescriptor:
    kind = _KIND_FROM_PROTO.get(message.kind)
    if kind is None:
        raise ValueError(f"IPC handle kind {message.kind} is unset or unknown")
    if kind is IpcKind.POSIX_SHM and not message.shm_name:
        raise ValueError("a POSIX_SHM handle needs shm_name")
    if kind is IpcKind.CUDA_IPC and not (message.cuda_ipc_descriptor and message.device_uuid):
        raise ValueError("a CUDA_IPC handle needs cuda_ipc_descriptor and device_uuid")
    return BufferDescriptor(kind, message.byte_size, message.node, message.shm_name,
                            bytes(message.cuda_ipc_descriptor), message.device_uuid)


def planned_buckets(staged: StagedVersion, source_worker_id: str,
                    first_index: int = 0) -> list[checkpoint_engine_pb2.PlannedBucket]:
    """The ``PublishVersionRequest.buckets`` of a staged version (what a trainer rank sends).

    With several trainer ranks, each stages its own parameters and the buckets are
    concatenated: rank k passes ``first_index`` = number of buckets of ranks before it.
    """
    handle = descriptor_to_proto(staged.buffer)
    planned = []
    for bucket, offset in zip(staged.plan.buckets, staged.offsets, strict=True):
        message = bucket_to_proto(bucket)
        message.index = first_index + bucket.index
        planned.append(checkpoint_engine_pb2.PlannedBucket(bucket=message, source_worker_id=source_worker_id,
                                                           source_buffer=handle, source_byte_offset=offset))
    return planned


def selector_from_proto(message: checkpoint_engine_pb2.TensorSelector) -> Selector:
    if message.HasField("dim"):
        return Selector(message.name, message.dim, message.start, message.length)
    return Selector(message.name)


def selector_to_proto(selector: Selector) -> checkpoint_engine_pb2.TensorSelector:
    if selector.dim is None:
        return checkpoint_engine_pb2.TensorSelector(name=selector.name)
    return checkpoint_engine_pb2.TensorSelector(name=selector.name, dim=selector.dim, start=selector.start,
                                                length=selector.length)


def shard_entries_to_proto(entries: Sequence[ShardEntry]) -> list[checkpoint_engine_pb2.ShardPlanEntry]:
    return [checkpoint_engine_pb2.ShardPlanEntry(selector=selector_to_proto(e.selector), bucket_index=e.bucket_index,
                                                 tensor=piece_to_proto(e.piece)) for e in entries]


def buckets_from_proto(messages: Iterable[common_pb2.WeightBucket]) -> list[BucketLayout]:
    return [bucket_from_proto(m) for m in messages]
