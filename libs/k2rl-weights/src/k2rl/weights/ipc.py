"""Descriptors of buffers shared between processes on one node, and how to open them.

Two mechanisms, as ``k2rl.common.v1.IpcHandle`` names them:
  * POSIX_SHM: a ``SharedBuffer`` segment (CPU path), described by its name and size;
  * CUDA_IPC: a CUDA allocation shared with ``torch.multiprocessing.reductions``. Its rebuild
    arguments are encoded here as JSON (no pickle: the receiver never executes what it is
    sent), and the receiver opens it on the device whose UUID matches, whatever index
    CUDA_VISIBLE_DEVICES gives that device in the receiving process.
"""

from __future__ import annotations

import enum
import json
import socket
from dataclasses import dataclass

import torch
from torch.multiprocessing import reductions

from k2rl.weights.dtypes import dtype_from_name, dtype_name
from k2rl.weights.shm import SharedBuffer, attach_buffer


class IpcKind(enum.Enum):
    POSIX_SHM = "posix_shm"
    CUDA_IPC = "cuda_ipc"


@dataclass(frozen=True)
class BufferDescriptor:
    """Where a shared buffer is and how to open it; travels in gRPC as an IpcHandle."""

    kind: IpcKind
    byte_size: int
    node: str
    shm_name: str = ""
    cuda_ipc_descriptor: bytes = b""
    device_uuid: str = ""


def this_node() -> str:
    return socket.gethostname()


def describe_shm(buffer: SharedBuffer) -> BufferDescriptor:
    return BufferDescriptor(IpcKind.POSIX_SHM, buffer.byte_size, this_node(), shm_name=buffer.shm_name)


def device_uuid(device: torch.device) -> str:
    return str(torch.cuda.get_device_properties(device).uuid)


def describe_cuda(tensor: torch.Tensor) -> BufferDescriptor:
    """Export a contiguous CUDA uint8 tensor. Keep ``tensor`` alive while others use it."""
    if tensor.device.type != "cuda" or tensor.dtype != torch.uint8 or not tensor.is_contiguous():
        raise TypeError("CUDA IPC export takes a contiguous uint8 CUDA tensor")
    _, args = reductions.reduce_tensor(tensor)
    (_, size, stride, offset, storage_cls, dtype, _device, handle, storage_bytes, storage_offset,
     _requires_grad, ref_handle, ref_offset, event_handle, event_sync) = args
    encoded = {
        "size": list(size), "stride": list(stride), "offset": offset,
        "storage_cls": storage_cls.__name__, "dtype": dtype_name(dtype),
        "handle": handle.hex(), "storage_bytes": storage_bytes, "storage_offset": storage_offset,
        "ref_handle": ref_handle.hex(), "ref_offset": ref_offset,
        "event_handle": event_handle.hex() if event_handle else "", "event_sync": bool(event_sync),
    }
    return BufferDescriptor(IpcKind.CUDA_IPC, tensor.numel(), this_node(),
                            cuda_ipc_descriptor=json.dumps(encoded).encode(), device_uuid=device_uuid(tensor.device))


_STORAGE_CLASSES = {"UntypedStorage": torch.UntypedStorage, "TypedStorage": torch.TypedStorage}


@dataclass(eq=False)
class OpenedBuffer:
    """An opened descriptor: ``tensor`` views its bytes; ``close`` releases the mapping."""

    descriptor: BufferDescriptor
    tensor: torch.Tensor
    _shared: SharedBuffer | None = None

    def close(self) -> None:
        if self._shared is not None:
            self._shared.close()
            self._shared = None
        self.tensor = torch.empty(0, dtype=torch.uint8)


def open_buffer(descriptor: BufferDescriptor) -> OpenedBuffer:
    """Map a buffer another process on this node exported. ValueError for another node."""
    if descriptor.node != this_node():
        raise ValueError(f"buffer lives on node {descriptor.node!r}, this is {this_node()!r}: IPC is same-node only")
    if descriptor.kind is IpcKind.POSIX_SHM:
        shared = attach_buffer(descriptor.shm_name, descriptor.byte_size)
        return OpenedBuffer(descriptor, shared.tensor[: descriptor.byte_size], shared)
    return OpenedBuffer(descriptor, _open_cuda(descriptor))


def _open_cuda(descriptor: BufferDescriptor) -> torch.Tensor:
    fields = json.loads(descriptor.cuda_ipc_descriptor)
    index = _device_index(descriptor.device_uuid)
    storage_cls = _STORAGE_CLASSES.get(fields["storage_cls"])
    if storage_cls is None:
        raise ValueError(f"unexpected storage class {fields['storage_cls']!r} in a CUDA IPC descriptor")
    event = bytes.fromhex(fields["event_handle"]) if fields["event_handle"] else None
    tensor = reductions.rebuild_cuda_tensor(
        torch.Tensor, torch.Size(fields["size"]), tuple(fields["stride"]), fields["offset"], storage_cls,
        dtype_from_name(fields["dtype"]), index, bytes.fromhex(fields["handle"]), fields["storage_bytes"],
        fields["storage_offset"], False, bytes.fromhex(fields["ref_handle"]), fields["ref_offset"], event,
        fields["event_sync"],
    )
    return tensor.view(torch.uint8).reshape(-1)[: descriptor.byte_size]


def _device_index(uuid: str) -> int:
    for index in range(torch.cuda.device_count()):
        if device_uuid(torch.device("cuda", index)) == uuid:
            return index
    raise ValueError(f"no visible CUDA device has UUID {uuid} (check CUDA_VISIBLE_DEVICES)")
