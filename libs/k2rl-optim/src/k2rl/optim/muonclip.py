"""MuonClip: K2 Algorithm 1 as one ``torch.optim.Optimizer`` with one ``step()``.

``step()`` does, in order:

1. read this step's per-head ``S_max`` from every attention module (running max over all
   micro-batch forwards since the last step; all-reduced with MAX across data-parallel ranks);
2. Muon (Algorithm 1 lines 3-7) on the hidden matrices -- batched Newton-Schulz over
   same-shaped matrices, MoE experts orthogonalised per expert -- and AdamW on the rest
   (embeddings, lm_head, norms, biases, router bias), see :mod:`k2rl.optim.param_roles`;
3. with ``data_parallel=True``: ZeRO-1 -- state lives on each parameter's owner rank, owners
   get the DP-mean gradient, update, and broadcast (see :mod:`k2rl.optim.distributed`);
4. QK-Clip (lines 8-19) *after* the update, per head, with the step's ``S_max``; statistics in
   :attr:`MuonClip.last_qk_clip_stats`; the modules' running maxima are reset for the next step.

Usage::

    opt = MuonClip.from_model(model, lr=2e-4, weight_decay=0.1)  # K2 §2.5 values
    for batch in loader:                     # micro-batches accumulate S_max and grads
        model(batch).loss.backward()
        opt.step(); opt.zero_grad()
        log(opt.last_qk_clip_stats.as_metrics())

``qk_clip_tau=None`` gives plain Muon (S_max is still measured and reported, nothing clipped).
The parameters are the optimizer's master copy: a trainer that keeps a lower-precision replica
must refresh it after ``step()`` so the replica sees the clipped weights too.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.optim import Optimizer

from k2rl.optim.adamw import adamw_step_
from k2rl.optim.distributed import (
    OwnershipPlan,
    all_reduce_max_,
    broadcast_from_owners_,
    plan_ownership,
    reduce_grads_to_owners,
)
from k2rl.optim.muon import (
    apply_muon_update_,
    matrix_shape,
    muon_momentum_,
    muon_update_scale,
    orthogonalise,
)
from k2rl.optim.newton_schulz import NS_COEFFICIENTS, NS_EPS, NS_STEPS
from k2rl.optim.param_roles import param_groups_for_model
from k2rl.optim.qk_clip import GQARule, qk_clip_gammas
from k2rl.optim.targets import QKClipTarget, QKNormPolicy, find_qk_clip_targets

__all__ = ["MuonClip", "QKClipStats"]

K2_TAU = 100.0  # K2 §2.1: tau = 100 for Kimi K2


@dataclass(frozen=True)
class QKClipStats:
    """What QK-Clip saw and did in one step (global across data-parallel ranks).

    ``num_clipped`` counts heads with ``S_max > tau`` (under the ``"layer"`` q/k-norm policy the
    whole layer is scaled, but only those heads are counted). ``max_logit`` is ``None`` when no
    attention module recorded a logit this step.
    """

    tau: float | None
    layers: tuple[int, ...]
    num_heads: int
    num_clipped: int
    max_logit: float | None
    per_layer_max_logit: tuple[float | None, ...]
    per_layer_num_clipped: tuple[int, ...]

    def as_metrics(self, prefix: str = "qk_clip/") -> dict[str, float]:
        out = {
            f"{prefix}num_clipped_heads": float(self.num_clipped),
            f"{prefix}frac_clipped_heads": self.num_clipped / max(self.num_heads, 1),
        }
        if self.max_logit is not None:
            out[f"{prefix}max_logit"] = self.max_logit
        return out


def _normalise_groups(params: Iterable[Any]) -> list[dict[str, Any]]:
    items = list(params)
    if not items:
        raise ValueError("MuonClip got an empty parameter list")
    if all(isinstance(x, dict) for x in items):
        return [dict(g) for g in items]
    if any(isinstance(x, dict) for x in items):
        raise ValueError("pass either tensors or param-group dicts, not a mix")
    # A bare tensor list means "all Muon", like torch.optim.Muon; use from_model() or explicit
    # {"role": "adamw"} groups for embeddings, heads, norms and biases.
    return [{"params": items, "role": "muon"}]


class MuonClip(Optimizer):
    """Muon + AdamW + QK-Clip in one optimizer object (K2 Algorithm 1), optionally ZeRO-1 sharded.

    Args:
        params: param-group dicts with ``role`` "muon" or "adamw" (see
            :func:`k2rl.optim.param_roles.param_groups_for_model`), or bare matrices (all Muon).
        lr, weight_decay: Muon ``eta`` and ``lambda`` (Algorithm 1 line 6).
        momentum: ``mu`` of ``M_t = mu M_{t-1} + G_t``.
        nesterov: use ``G_t + mu M_t`` as NS input (not in Algorithm 1; off by default).
        adamw_lr, adamw_weight_decay: default to ``lr`` / ``weight_decay`` (the 0.2 sqrt(max(n,m))
            RMS matching lets both halves share them, as K2 does).
        ns_steps, ns_coefficients, ns_eps, ns_dtype: Newton-Schulz, see
            :mod:`k2rl.optim.newton_schulz`.
        ns_max_batch_numel: elements per batched NS call (None: a per-device default, see
            :func:`k2rl.optim.muon.default_ns_max_batch_numel`).
        qk_clip_targets: attention layers to clip (``from_model`` finds them).
        qk_clip_tau: ``tau`` (K2: 100); ``None`` disables clipping but keeps the statistics.
        gqa_rule, gqa_alpha: how a shared GQA key is clipped, see :mod:`k2rl.optim.qk_clip`.
        reset_max_logits: reset the modules' running ``S_max`` after each step (the next step's
            forwards then measure afresh).
        data_parallel: shard optimizer state over ``process_group`` (default group) ZeRO-1 style.
        grad_sync: with ``data_parallel``: ``"reduce"`` -- gradients are local and the optimizer
            reduces the DP mean to each owner; ``"none"`` -- they are already averaged (DDP).
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        lr: float = 2e-4,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = False,
        adamw_lr: float | None = None,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-8,
        adamw_weight_decay: float | None = None,
        ns_steps: int = NS_STEPS,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        ns_eps: float = NS_EPS,
        ns_dtype: torch.dtype = torch.bfloat16,
        ns_max_batch_numel: int | None = None,
        qk_clip_targets: Sequence[QKClipTarget] = (),
        qk_clip_tau: float | None = K2_TAU,
        gqa_rule: GQARule = "exact",
        gqa_alpha: float = 0.5,
        reset_max_logits: bool = True,
        data_parallel: bool = False,
        process_group: dist.ProcessGroup | None = None,
        grad_sync: Literal["reduce", "none"] = "reduce",
    ) -> None:
        if lr < 0 or weight_decay < 0 or momentum < 0:
            raise ValueError("lr, weight_decay and momentum must be >= 0")
        if qk_clip_tau is not None and qk_clip_tau <= 0:
            raise ValueError("qk_clip_tau must be positive (or None to disable QK-Clip)")
        if grad_sync not in ("reduce", "none"):
            raise ValueError(f"unknown grad_sync {grad_sync!r}")
        groups = _normalise_groups(params)
        for group in groups:
            role = group.setdefault("role", "muon")
            if role == "muon":
                group.setdefault("lr", lr)
                group.setdefault("weight_decay", weight_decay)
                group.setdefault("momentum", momentum)
                group.setdefault("nesterov", nesterov)
            elif role == "adamw":
                group.setdefault("lr", lr if adamw_lr is None else adamw_lr)
                group.setdefault(
                    "weight_decay",
                    weight_decay if adamw_weight_decay is None else adamw_weight_decay,
                )
                group.setdefault("betas", tuple(adamw_betas))
                group.setdefault("eps", adamw_eps)
            else:
                raise ValueError(f"param group role must be 'muon' or 'adamw', got {role!r}")
        super().__init__(groups, {"lr": lr, "weight_decay": weight_decay})
        for group in self.param_groups:
            if group["role"] == "muon":
                for p in group["params"]:
                    matrix_shape(p)  # raises for shapes Muon cannot take

        self.ns_steps = ns_steps
        self.ns_coefficients = tuple(ns_coefficients)
        self.ns_eps = ns_eps
        self.ns_dtype = ns_dtype
        self.ns_max_batch_numel = ns_max_batch_numel
        self.qk_clip_targets: list[QKClipTarget] = list(qk_clip_targets)
        self.qk_clip_tau = qk_clip_tau
        self.gqa_rule: GQARule = gqa_rule
        self.gqa_alpha = gqa_alpha
        self.reset_max_logits = reset_max_logits
        self.grad_sync = grad_sync
        self.last_qk_clip_stats: QKClipStats | None = None
        self._warned_no_logits = False

        self.data_parallel = data_parallel
        self.process_group = process_group
        if data_parallel:
            if not dist.is_available() or not dist.is_initialized():
                raise RuntimeError("data_parallel=True needs an initialised torch.distributed")
            self.rank = dist.get_rank(process_group)
            self.world_size = dist.get_world_size(process_group)
        else:
            self.rank, self.world_size = 0, 1
        self._plan_key: tuple[int, ...] = ()
        self._plan: OwnershipPlan | None = None
        self._refresh_plan()

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        *,
        extra_adamw_patterns: Iterable[str] = (),
        qk_norm_policy: QKNormPolicy = "layer",
        **kwargs: Any,
    ) -> MuonClip:
        """Build the optimizer for ``model``: parameter roles, attention targets, S_max tracking."""
        groups = param_groups_for_model(model, extra_adamw_patterns=extra_adamw_patterns)
        targets = find_qk_clip_targets(model, qk_norm_policy=qk_norm_policy)
        if targets:
            setter = getattr(model, "set_track_max_logits", None)
            if callable(setter):
                setter(True)
            else:
                for target in targets:
                    target.module.track_max_logits = True
        return cls(groups, qk_clip_targets=targets, **kwargs)

    # ------------------------------------------------------------------ sharding
    def _all_params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _refresh_plan(self) -> None:
        params = self._all_params()
        key = tuple(id(p) for p in params)
        if key == self._plan_key and self._plan is not None:
            return
        roles = [g["role"] for g in self.param_groups for _ in g["params"]]
        costs = []
        for p, role in zip(params, roles, strict=True):
            if role == "muon":
                n, m = matrix_shape(p)
                costs.append(float(p.numel()) * min(n, m) * self.ns_steps)  # NS matmul flops
            else:
                costs.append(float(p.numel()) * 16)  # a handful of elementwise passes
        self._plan = plan_ownership(costs, self.world_size)
        self._plan_key = key

    def owned_params(self) -> list[Tensor]:
        """Parameters whose state and update live on this rank (all of them when not sharded)."""
        self._refresh_plan()
        assert self._plan is not None
        params = self._all_params()
        return [params[i] for i in self._plan.owned_by(self.rank)]

    def _owned_grads(self) -> dict[int, Tensor]:
        params = self._all_params()
        assert self._plan is not None
        if self.world_size > 1 and self.grad_sync == "reduce":
            grads = reduce_grads_to_owners(
                params, self._plan, rank=self.rank, group=self.process_group
            )
        else:
            owned = set(self._plan.owned_by(self.rank))
            grads = {i: p.grad for i, p in enumerate(params) if i in owned and p.grad is not None}
        for g in grads.values():
            if g.is_sparse:
                raise RuntimeError("MuonClip does not support sparse gradients")
        return grads

    # ------------------------------------------------------------------ step
    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self._refresh_plan()
        s_max = self._global_max_logits()
        grads = self._owned_grads()
        index = 0
        muon_work: list[tuple[dict[str, Any], Tensor, Tensor]] = []
        adamw_work: list[tuple[dict[str, Any], Tensor, Tensor]] = []
        for group in self.param_groups:
            for p in group["params"]:
                if index in grads:
                    work = muon_work if group["role"] == "muon" else adamw_work
                    work.append((group, p, grads[index]))
                index += 1
        self._muon_update(muon_work)
        self._adamw_update(adamw_work)
        if self.world_size > 1:
            assert self._plan is not None
            broadcast_from_owners_(self._all_params(), self._plan, group=self.process_group)
        self.last_qk_clip_stats = self._qk_clip(s_max)
        return loss

    def _muon_update(self, work: list[tuple[dict[str, Any], Tensor, Tensor]]) -> None:
        by_group: dict[int, list[tuple[Tensor, Tensor]]] = defaultdict(list)
        groups: dict[int, dict[str, Any]] = {}
        for group, p, g in work:
            by_group[id(group)].append((p, g))
            groups[id(group)] = group
        ns_inputs: list[Tensor] = []
        targets: list[tuple[dict[str, Any], Tensor]] = []
        for gid, items in by_group.items():
            group = groups[gid]
            buffers = []
            for p, _ in items:
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        p, memory_format=torch.preserve_format
                    )
                buffers.append(state["momentum_buffer"])
            ns_inputs += muon_momentum_(
                buffers,
                [g for _, g in items],
                momentum=group["momentum"],
                nesterov=group["nesterov"],
            )
            targets += [(group, p) for p, _ in items]
        if not ns_inputs:
            return
        ortho = orthogonalise(
            ns_inputs,
            steps=self.ns_steps,
            coefficients=self.ns_coefficients,  # type: ignore[arg-type]
            eps=self.ns_eps,
            dtype=self.ns_dtype,
            max_batch_numel=self.ns_max_batch_numel,
        )
        batches: dict[tuple[int, float], tuple[dict[str, Any], list[Tensor], list[Tensor]]] = {}
        for (group, p), o in zip(targets, ortho, strict=True):
            key = (id(group), muon_update_scale(matrix_shape(p)))
            batches.setdefault(key, (group, [], []))
            batches[key][1].append(p)
            batches[key][2].append(o)
        for (_, scale), (group, params, updates) in batches.items():
            apply_muon_update_(
                params, updates, lr=group["lr"], weight_decay=group["weight_decay"], scale=scale
            )

    def _adamw_update(self, work: list[tuple[dict[str, Any], Tensor, Tensor]]) -> None:
        batches: dict[tuple[int, int], tuple[dict[str, Any], list[list[Tensor]]]] = {}
        for group, p, g in work:
            state = self.state[p]
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["step"] = int(state["step"]) + 1
            key = (id(group), state["step"])
            batches.setdefault(key, (group, [[], [], [], []]))
            lists = batches[key][1]
            lists[0].append(p)
            lists[1].append(g)
            lists[2].append(state["exp_avg"])
            lists[3].append(state["exp_avg_sq"])
        for (_, step), (group, (params, grads, avgs, sqs)) in batches.items():
            adamw_step_(
                params,
                grads,
                avgs,
                sqs,
                step=step,
                lr=group["lr"],
                betas=tuple(group["betas"]),  # type: ignore[arg-type]
                eps=group["eps"],
                weight_decay=group["weight_decay"],
            )

    # ------------------------------------------------------------------ QK-Clip
    def _global_max_logits(self) -> Tensor | None:
        if not self.qk_clip_targets:
            return None
        device = self.qk_clip_targets[0].parameters()[0].device
        s_max = torch.cat([t.read_max_logits(device) for t in self.qk_clip_targets])
        if self.world_size > 1:
            all_reduce_max_(s_max, group=self.process_group)
        return s_max

    def _qk_clip(self, s_max: Tensor | None) -> QKClipStats | None:
        if s_max is None:
            return None
        targets = self.qk_clip_targets
        sizes = [t.num_heads for t in targets]
        tau = self.qk_clip_tau
        gammas = qk_clip_gammas(s_max, tau) if tau is not None else torch.ones_like(s_max)
        clipped = (gammas < 1).to(torch.int64)
        # One host sync per step for the decisions and the statistics.
        s_host = s_max.cpu()
        clipped_host = clipped.cpu()
        per_layer_max: list[float | None] = []
        per_layer_clipped: list[int] = []
        for target, s, c, g in zip(
            targets,
            s_host.split(sizes),
            clipped_host.split(sizes),
            gammas.split(sizes),
            strict=True,
        ):
            finite = s[torch.isfinite(s)]
            per_layer_max.append(float(finite.max()) if finite.numel() else None)
            count = int(c.sum())
            per_layer_clipped.append(count)
            if count:
                target.clip_(g, gqa_rule=self.gqa_rule, gqa_alpha=self.gqa_alpha)
            if self.reset_max_logits:
                target.reset_max_logits()
        measured = [m for m in per_layer_max if m is not None]
        if tau is not None and not measured and not self._warned_no_logits:
            warnings.warn(
                "QK-Clip is on but no attention module recorded max logits this step; "
                "is track_max_logits enabled?",
                stacklevel=3,
            )
            self._warned_no_logits = True
        return QKClipStats(
            tau=tau,
            layers=tuple(t.layer for t in targets),
            num_heads=sum(sizes),
            num_clipped=sum(per_layer_clipped),
            max_logit=max(measured) if measured else None,
            per_layer_max_logit=tuple(per_layer_max),
            per_layer_num_clipped=tuple(per_layer_clipped),
        )
