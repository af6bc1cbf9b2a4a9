"""CUDA IPC descriptors (GPU only): a buffer exported here is opened in another process."""

import subprocess
import sys
import textwrap

import pytest
import torch

from k2rl.weights import ChecksumAlgorithm, IpcKind, compute_checksum, describe_cuda
from k2rl.weights import proto as wire

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_cuda_buffer_is_shared_with_another_process_and_sum64_agrees_on_device() -> None:
    buffer = torch.randint(0, 256, (1 << 20,), dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    descriptor = describe_cuda(buffer)
    assert descriptor.kind is IpcKind.CUDA_IPC and descriptor.byte_size == buffer.numel()
    expected = compute_checksum(buffer, ChecksumAlgorithm.SUM64)
    assert expected == compute_checksum(buffer.cpu(), ChecksumAlgorithm.SUM64)
    handle = wire.descriptor_to_proto(descriptor).SerializeToString()
    code = textwrap.dedent(f"""
        import sys, torch
        from k2rl.common.v1 import common_pb2
        from k2rl.weights import ChecksumAlgorithm, compute_checksum, open_buffer
        from k2rl.weights import proto as wire
        handle = common_pb2.IpcHandle.FromString(bytes.fromhex({handle.hex()!r}))
        opened = open_buffer(wire.descriptor_from_proto(handle))
        print(compute_checksum(opened.tensor, ChecksumAlgorithm.SUM64).digest.hex())
        opened.tensor[0] = 42
        torch.cuda.synchronize()
        opened.close()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected.digest.hex()
    assert int(buffer[0]) == 42, "the other process wrote into the same device memory"
