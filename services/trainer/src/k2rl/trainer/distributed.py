"""The trainer's process group: setup from torchrun variables and the collectives it runs.

Ranks find each other through the standard variables (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), so a job started by ``torchrun`` and one
spawned by ``k2rl serve trainer --nproc N`` look the same. The backend follows the device:
NCCL on CUDA, gloo on CPU. A job of one rank needs no process group at all; every helper
here is a no-op (or the identity) then.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

GRAD_BUCKET_BYTES = 32 * 2**20


@dataclass(frozen=True)
class DistContext:
    """Who this process is in the trainer job and which device it computes on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    @property
    def node(self) -> str:
        return socket.gethostname()


def resolve_device(choice: str, local_rank: int) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_from_env(
    device_choice: str = "auto", timeout_s: float = 600.0, env: Mapping[str, str] | None = None
) -> DistContext:
    """Join the job the torchrun variables in ``env`` (default: ``os.environ``) describe.

    Without them this process is a job of one rank and no process group is created.
    """
    env = os.environ if env is None else env
    rank = int(env.get("RANK", "0"))
    world_size = int(env.get("WORLD_SIZE", "1"))
    local_rank = int(env.get("LOCAL_RANK", str(rank)))
    device = resolve_device(device_choice, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    elif world_size > 1:
        # CPU ranks on one host share its cores; oversubscribed intra-op threads thrash.
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            init_method=f"tcp://{env.get('MASTER_ADDR', '127.0.0.1')}:{env['MASTER_PORT']}",
            rank=rank,
            world_size=world_size,
            timeout=timedelta(seconds=timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    return DistContext(rank, world_size, local_rank, device)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for commands and small metadata only)."""
    if not ctx.is_distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.device.type == "cuda" else None)
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not ctx.is_distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum_(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.is_distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_scalar(value: float, ctx: DistContext, op: str = "sum") -> float:
    if not ctx.is_distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=ctx.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return float(t.item())


@torch.no_grad()
def all_reduce_gradients_(params: Sequence[torch.Tensor], ctx: DistContext) -> None:
    """Sum every parameter's gradient over ranks, in flat buckets.

    A rank where a parameter got no gradient (an MoE expert no token of its micro-batches
    was routed to) contributes zeros. A parameter with no gradient on *any* rank keeps
    ``grad = None``, so the optimizer skips it exactly as a single process would; the
    presence flags travel in the same buffer as the gradients.
    """
    if not ctx.is_distributed:
        return
    buckets: list[list[torch.Tensor]] = [[]]
    size = 0
    for p in params:
        nbytes = p.numel() * p.element_size()
        if buckets[-1] and (size + nbytes > GRAD_BUCKET_BYTES or p.dtype != buckets[-1][0].dtype):
            buckets.append([])
            size = 0
        buckets[-1].append(p)
        size += nbytes
    for bucket in buckets:
        if not bucket:
            continue
        sizes = [p.numel() for p in bucket]
        total = sum(sizes)
        flat = torch.zeros(total + len(bucket), dtype=bucket[0].dtype, device=bucket[0].device)
        offset = 0
        for p, n in zip(bucket, sizes, strict=True):
            if p.grad is not None:
                flat[offset : offset + n].copy_(p.grad.reshape(-1))
            offset += n
        flat[total:] = torch.tensor([p.grad is not None for p in bucket], dtype=flat.dtype)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for p, n, present in zip(bucket, sizes, flat[total:].tolist(), strict=True):
            if present > 0:
                grad = flat[offset : offset + n].view_as(p)
                if p.grad is None:
                    p.grad = grad.clone()
                else:
                    p.grad.copy_(grad)
            offset += n


def broadcast_tensor_(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Rank 0's values into ``tensor`` on every rank."""
    if ctx.is_distributed:
        dist.broadcast(tensor, src=0)
    return tensor


def barrier(ctx: DistContext) -> None:
    if ctx.is_distributed:
        dist.barrier()
