"""k2rl.weights: how weights move between processes without going through gRPC.

Layout (``plan_buckets``, ``validate_plan``), checksums (``compute_checksum``), POSIX shared
memory (``create_buffer``, ``attach_buffer``, ``reap_orphans``), IPC descriptors for shm and
CUDA IPC (``describe_shm``, ``describe_cuda``, ``open_buffer``), the source side
(``pack_bucket``, ``WeightStager``), the sink side (``select_shard``, ``WeightReceiver``) and
tensor-parallel shard plans (``plan_tensor_parallel``).
Wire conversions live in ``k2rl.weights.proto``. See libs/k2rl-weights/README.md.
"""

from k2rl.weights.checksum import (
    Checksum,
    ChecksumAlgorithm,
    ChecksumMismatch,
    StreamingChecksum,
    compute_checksum,
    hashed_copy,
    verify_checksum,
)
from k2rl.weights.dtypes import dtype_from_name, dtype_name, element_size
from k2rl.weights.ipc import (
    BufferDescriptor,
    IpcKind,
    OpenedBuffer,
    describe_cuda,
    describe_shm,
    open_buffer,
    this_node,
)
from k2rl.weights.layout import (
    DEFAULT_ALIGNMENT,
    DEFAULT_BUCKET_BYTES,
    BucketLayout,
    BucketPlan,
    LayoutError,
    TensorPiece,
    TensorSpec,
    plan_buckets,
    validate_plan,
)
from k2rl.weights.reader import Selector, ShardEntry, WeightReceiver, select_shard, typed_view
from k2rl.weights.shard_plan import (
    ShardKind,
    ShardPlan,
    TensorShard,
    plan_tensor_parallel,
    shapes_of_layout,
)
from k2rl.weights.shm import (
    SharedBuffer,
    SharedMemoryError,
    attach_buffer,
    create_buffer,
    reap_orphans,
)
from k2rl.weights.writer import (
    StagedVersion,
    WeightStager,
    bucket_offsets,
    pack_bucket,
    tensor_bytes,
)

__all__ = [
    "DEFAULT_ALIGNMENT", "DEFAULT_BUCKET_BYTES", "BucketLayout", "BucketPlan", "BufferDescriptor", "Checksum",
    "ChecksumAlgorithm", "ChecksumMismatch", "IpcKind", "LayoutError", "OpenedBuffer", "Selector", "ShardEntry",
    "ShardKind", "ShardPlan", "SharedBuffer", "SharedMemoryError", "StagedVersion", "StreamingChecksum",
    "TensorPiece", "TensorShard",
    "TensorSpec", "WeightReceiver", "WeightStager", "attach_buffer", "bucket_offsets", "compute_checksum",
    "create_buffer", "describe_cuda", "describe_shm", "dtype_from_name", "dtype_name", "element_size", "hashed_copy",
    "open_buffer", "pack_bucket", "plan_buckets", "plan_tensor_parallel", "reap_orphans", "select_shard",
    "shapes_of_layout", "tensor_bytes", "this_node", "typed_view", "validate_plan", "verify_checksum",
]
