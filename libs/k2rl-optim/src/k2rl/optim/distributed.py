"""Distributed Muon, ZeRO-1 style: whole matrices are owned by data-parallel ranks.

Every rank holds the full parameters (data parallel). Optimizer *state* is sharded: each
parameter has one owner rank, which alone keeps its momentum / Adam moments and computes its
update. Because Newton-Schulz needs the whole matrix (it is not elementwise), ownership is per
matrix, never per slice: the owner receives the full data-parallel-averaged gradient, runs NS on
it, and broadcasts the updated parameter. One step is

1. ``reduce`` each owner's gradient bucket to it (sum, then ``/ world_size``) -- half the traffic
   of an all-reduce, the ZeRO gradient path;
2. owners apply Muon (batched NS over their matrices) or AdamW;
3. each owner ``broadcast``s its updated parameters (the ZeRO-1 all-gather);
4. QK-Clip on every rank with the *global* ``S_max`` (``all_reduce(MAX)`` of the per-rank running
   maxima), which keeps the replicas identical without a second broadcast.

Ownership is a deterministic greedy balance of estimated cost (NS flops for matrices, element
count for AdamW), so all ranks compute the same plan from the same model. Collectives are plain
``torch.distributed`` calls on flat per-(owner, dtype, device) buckets: gloo on CPU, NCCL on GPU.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "OwnershipPlan",
    "all_reduce_max_",
    "broadcast_from_owners_",
    "plan_ownership",
    "reduce_grads_to_owners",
]


@dataclass(frozen=True)
class OwnershipPlan:
    """``owners[i]`` is the rank that keeps state for and updates parameter ``i``."""

    world_size: int
    owners: tuple[int, ...]

    def owned_by(self, rank: int) -> list[int]:
        return [i for i, r in enumerate(self.owners) if r == rank]


def plan_ownership(costs: Sequence[float], world_size: int) -> OwnershipPlan:
    """Longest-processing-time greedy: biggest cost first, to the least loaded rank (ties: lowest)."""
    if world_size < 1:
        raise ValueError("world_size must be >= 1")
    owners = [0] * len(costs)
    heap = [(0.0, rank) for rank in range(world_size)]
    order = sorted(range(len(costs)), key=lambda i: (-costs[i], i))
    for i in order:
        load, rank = heapq.heappop(heap)
        owners[i] = rank
        heapq.heappush(heap, (load + float(costs[i]), rank))
    return OwnershipPlan(world_size, tuple(owners))


def _buckets(params: Sequence[Tensor], owners: Sequence[int]) -> dict[tuple, list[int]]:
    buckets: dict[tuple, list[int]] = defaultdict(list)
    for i, p in enumerate(params):
        buckets[(owners[i], p.dtype, p.device)].append(i)
    return dict(sorted(buckets.items(), key=lambda kv: (kv[0][0], str(kv[0][1]), str(kv[0][2]))))


def reduce_grads_to_owners(
    params: Sequence[Tensor],
    plan: OwnershipPlan,
    *,
    rank: int,
    group: dist.ProcessGroup | None = None,
) -> dict[int, Tensor]:
    """Data-parallel mean gradient of every parameter owned by ``rank`` (index -> grad).

    A rank whose parameter has no gradient (e.g. an expert that got no tokens there) contributes
    zeros; a parameter that had no gradient on *any* rank is absent from the result, exactly as
    a single-process optimizer skips ``grad is None``. The presence flags travel in the same
    buffer as the gradients (one collective per bucket).
    """
    world = plan.world_size
    result: dict[int, Tensor] = {}
    for (owner, dtype, device), members in _buckets(params, plan.owners).items():
        sizes = [params[i].numel() for i in members]
        total = sum(sizes)
        flat = torch.zeros(total + len(members), dtype=dtype, device=device)
        present = [params[i].grad is not None for i in members]
        offset = 0
        for i, n, has_grad in zip(members, sizes, present, strict=True):
            if has_grad:
                flat[offset : offset + n].copy_(params[i].grad.reshape(-1))
            offset += n
        flat[total:].copy_(torch.tensor(present, dtype=dtype))
        dist.reduce(flat, dst=_global_rank(owner, group), op=dist.ReduceOp.SUM, group=group)
        if owner != rank:
            continue
        flags = flat[total:].tolist()
        grads = flat[:total].div_(world).split(sizes)
        for i, g, flag in zip(members, grads, flags, strict=True):
            if flag > 0:
                result[i] = g.view_as(params[i])
    return result


@torch.no_grad()
def broadcast_from_owners_(
    params: Sequence[Tensor], plan: OwnershipPlan, *, group: dist.ProcessGroup | None = None
) -> None:
    """Overwrite every rank's copy of each parameter with its owner's (one broadcast per bucket)."""
    for (owner, _, _), members in _buckets(params, plan.owners).items():
        flat = torch.cat([params[i].detach().reshape(-1) for i in members])
        dist.broadcast(flat, src=_global_rank(owner, group), group=group)
        offset = 0
        for i in members:
            n = params[i].numel()
            params[i].copy_(flat[offset : offset + n].view_as(params[i]))
            offset += n


def all_reduce_max_(tensor: Tensor, group: dist.ProcessGroup | None = None) -> Tensor:
    """Global per-head ``S_max``: max over data-parallel ranks (Megatron-LM does the same)."""
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return tensor


def _global_rank(group_rank: int, group: dist.ProcessGroup | None) -> int:
    if group is None:
        return group_rank
    return dist.get_global_rank(group, group_rank)
