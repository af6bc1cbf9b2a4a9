"""Turns a PublishVersion request into a stored plan: validation, and bucket planning for a
checkpoint on disk (from the safetensors headers only; no tensor is read here)."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.core.errors import InvalidArgument, ResourceExhausted
from k2rl.weights import (
    BucketLayout,
    LayoutError,
    TensorSpec,
    dtype_from_name,
    plan_buckets,
    validate_plan,
)
from k2rl.weights import proto as wire

# safetensors header dtype names -> torch dtype names
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                       "F8_E4M3": "float8_e4m3fn", "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32",
                       "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool"}


def plan_from_request(request: ce.PublishVersionRequest, bucket_bytes: int, max_tensors: int) -> ce.GetVersionPlanResponse:
    """Validate ``request``; return the plan to store (version number not yet assigned)."""
    version = request.version
    if not request.HasField("version"):
        raise InvalidArgument("is required (trainer_step, total_bytes)", field="version")
    plan = ce.GetVersionPlanResponse()
    plan.version.CopyFrom(version)
    which = request.WhichOneof("source")
    if which == "trainer":
        _check_trainer_plan(request, bucket_bytes, max_tensors)
        plan.trainer.CopyFrom(request.trainer)
        plan.buckets.extend(request.buckets)
        plan.version.source = plan.version.source or "trainer"
    elif which == "checkpoint":
        if request.buckets:
            raise InvalidArgument("must be empty for a checkpoint source: the engine plans the buckets", field="buckets")
        plan.checkpoint.CopyFrom(request.checkpoint)
        buckets = plan_checkpoint(Path(request.checkpoint.path), bucket_bytes)
        plan.buckets.extend(ce.PlannedBucket(bucket=wire.bucket_to_proto(b)) for b in buckets)
        total = sum(b.byte_size for b in buckets)
        if version.total_bytes and version.total_bytes != total:
            raise InvalidArgument(f"is {version.total_bytes}, the checkpoint holds {total}", field="version.total_bytes")
        plan.version.total_bytes = total
        plan.version.source = request.checkpoint.path
    else:
        raise InvalidArgument("a trainer or checkpoint source is required", field="source")
    return plan


def _check_trainer_plan(request: ce.PublishVersionRequest, bucket_bytes: int, max_tensors: int) -> None:
    if not request.buckets:
        raise InvalidArgument("a trainer source needs its bucket plan", field="buckets")
    if request.version.total_bytes == 0:
        raise InvalidArgument("is required for a trainer source", field="version.total_bytes")
    if sum(len(p.bucket.tensors) for p in request.buckets) > max_tensors:
        raise ResourceExhausted(f"more than {max_tensors} tensors in one version", field="buckets")
    try:
        buckets = [wire.bucket_from_proto(p.bucket) for p in request.buckets]
        for planned in request.buckets:
            wire.descriptor_from_proto(planned.source_buffer)
    except ValueError as error:
        raise InvalidArgument(str(error), field="buckets") from None
    for bucket in buckets:
        if bucket.checksum is None:
            raise InvalidArgument(f"bucket {bucket.index} has no checksum; every bucket needs one", field="buckets.checksum")
    for planned, bucket in zip(request.buckets, buckets, strict=True):
        if planned.source_byte_offset + bucket.byte_size > planned.source_buffer.byte_size:
            raise InvalidArgument(f"bucket {bucket.index} ends past its source buffer", field="buckets.source_byte_offset")
    try:
        validate_plan(buckets, max_bucket_bytes=bucket_bytes)
    except LayoutError as error:
        raise InvalidArgument(str(error), field="buckets") from None
    total = sum(b.byte_size for b in buckets)
    if total != request.version.total_bytes:
        raise InvalidArgument(f"is {request.version.total_bytes}, the buckets hold {total}", field="version.total_bytes")


@dataclass(frozen=True)
class StoredTensor:
    """A checkpoint tensor and where its bytes are: ``file`` from byte ``data_offset`` on."""

    spec: TensorSpec
    file: Path
    data_offset: int


def checkpoint_specs(path: Path) -> list[StoredTensor]:
    """Every tensor of an HF safetensors checkpoint with its place on disk, from headers alone.

    FP8 block-quantised checkpoints are carried as stored (weights and their scale_inv
    tensors); dequantising is the replica's loader's job, as when it reads the files.
    """
    if not path.is_dir():
        raise InvalidArgument(f"checkpoint directory {path} does not exist", field="checkpoint.path")
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise InvalidArgument(f"no *.safetensors files in {path}", field="checkpoint.path")
    stored = []
    for file in files:
        header_bytes, header = _header(file)
        for name, entry in sorted(header.items()):
            if name == "__metadata__":
                continue
            dtype = _SAFETENSORS_DTYPES.get(entry["dtype"])
            if dtype is None:
                raise InvalidArgument(f"{file.name}: tensor {name} has unsupported dtype {entry['dtype']}", field="checkpoint.path")
            spec = TensorSpec(name, tuple(entry["shape"]), dtype_from_name(dtype))
            begin, end = entry["data_offsets"]
            if end - begin != spec.nbytes:
                raise InvalidArgument(f"{file.name}: tensor {name} spans {end - begin} bytes, its shape and dtype need "
                                      f"{spec.nbytes}", field="checkpoint.path")
            stored.append(StoredTensor(spec, file, 8 + header_bytes + begin))
    return stored


def plan_checkpoint(path: Path, bucket_bytes: int) -> tuple[BucketLayout, ...]:
    specs = [stored.spec for stored in checkpoint_specs(path)]
    try:
        return plan_buckets(specs, bucket_bytes).buckets
    except LayoutError as error:
        raise InvalidArgument(str(error), field="checkpoint.path") from None


def _header(file: Path) -> tuple[int, dict]:
    """The header's length in bytes (the data follow it) and its parsed JSON."""
    with file.open("rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        if length > 100 * 2**20:
            raise InvalidArgument(f"{file.name}: safetensors header of {length} bytes is implausible", field="checkpoint.path")
        return length, json.loads(handle.read(length))

