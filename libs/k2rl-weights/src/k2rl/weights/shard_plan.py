"""Tensor-parallel shard plans: which slice of which parameter a TP rank serves.

``plan_tensor_parallel(config, shapes, tp_size, rank)`` maps every parameter (HF names, as
in the bucket layouts) to a ``TensorShard``, following the Megatron / vLLM split that the
serving code would apply:

* attention, split by heads (HF layouts are head-major, so a rank's heads are one
  contiguous range): column-parallel (dim 0) ``q_proj``, MLA's ``q_b_proj`` and
  ``kv_b_proj``, GQA's ``k_proj`` / ``v_proj`` (and their biases); row-parallel (dim 1)
  ``o_proj``. MLA's down-projections ``q_a_proj`` / ``kv_a_proj_with_mqa`` and their norms
  are small and replicated, as in vLLM. GQA with more ranks than KV heads replicates each KV
  head over ``tp_size / num_key_value_heads`` consecutive ranks, the ones whose query heads
  use it.
* MLP (dense and shared experts): ``gate_proj`` / ``up_proj`` column, ``down_proj`` row.
* MoE: expert-parallel, expert ``e`` whole on rank ``e // (n_routed_experts / tp_size)``
  (nothing of other experts); the router and its correction bias are replicated.
* ``embed_tokens`` / ``lm_head``: vocabulary rows in balanced contiguous ranges (the first
  ``vocab % tp_size`` ranks get one more row; padding to a kernel multiple is the engine's
  business).
* norms, biases added after a row-parallel reduction: replicated.

A name no rule knows (e.g. FP8 ``weight_scale_inv``, whose 128-blocks a split would cut) is
an error, never silently replicated.

How the checkpoint engine uses it (not wired in yet): a replica of TP rank ``r`` passes
``plan.selectors()`` to ``WeightReceiver`` (and to GetShardPlan as
``[proto.selector_to_proto(s) for s in plan.selectors()]``),
and the engine answers with ``select_shard(buckets, plan.selectors())`` / ``plan.locate``:
only buckets holding the rank's tensors are sent, and the receiver narrows each tensor to
the rank's slice. The shapes come from the version's bucket layout (``shapes_of_layout``)
and the config from the replica's ``GetModelInfo.config_json``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from k2rl.weights.layout import BucketLayout, LayoutError
from k2rl.weights.reader import Selector, ShardEntry, select_shard


class ShardKind(enum.Enum):
    REPLICATED = "replicated"  # the whole tensor on every rank
    COLUMN = "column"  # a range of output features (dim 0)
    ROW = "row"  # a range of input features (dim 1); the layer's output is all-reduced
    VOCAB = "vocab"  # a range of vocabulary rows (dim 0)
    EXPERT = "expert"  # the whole tensor, on the one rank that owns the expert


@dataclass(frozen=True)
class TensorShard:
    """The part of tensor ``name`` one rank holds: whole (``dim`` None) or ``length`` entries
    of ``dim`` from ``start``."""

    name: str
    kind: ShardKind
    dim: int | None = None
    start: int = 0
    length: int = 0

    def selector(self) -> Selector:
        return Selector(self.name, self.dim, self.start, self.length)

    def take(self, tensor: torch.Tensor) -> torch.Tensor:
        """This shard of the full ``tensor`` (a view)."""
        return tensor if self.dim is None else tensor.narrow(self.dim, self.start, self.length)


@dataclass(frozen=True)
class ShardPlan:
    tp_size: int
    rank: int
    shards: tuple[TensorShard, ...]

    def __iter__(self) -> Iterator[TensorShard]:
        return iter(self.shards)

    def __getitem__(self, name: str) -> TensorShard:
        for shard in self.shards:
            if shard.name == name:
                return shard
        raise KeyError(name)

    def selectors(self) -> list[Selector]:
        return [shard.selector() for shard in self.shards]

    def extract(self, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's slices of full tensors (views; tensors of unowned experts left out)."""
        return {shard.name: shard.take(tensors[shard.name]) for shard in self.shards}

    def locate(self, buckets: Sequence[BucketLayout]) -> list[ShardEntry]:
        """Where this rank's tensors lie in a version's buckets (what GetShardPlan answers)."""
        return select_shard(buckets, self.selectors())


@dataclass(frozen=True)
class _Model:
    """The config facts the split needs."""

    num_heads: int
    num_kv_heads: int
    num_experts: int
    tp_size: int
    rank: int


# (name pattern, how to shard). Patterns match the name after "model.layers.<i>.".
_Rule = Callable[[str, tuple[int, ...], _Model], "TensorShard | None"]


def _replicated(name: str, shape: tuple[int, ...], model: _Model) -> TensorShard:
    return TensorShard(name, ShardKind.REPLICATED)


def _range(size: int, parts: int, index: int) -> tuple[int, int]:
    """Balanced contiguous range ``index`` of ``parts`` over ``size`` (start, length)."""
    base, extra = divmod(size, parts)
    start = index * base + min(index, extra)
    return start, base + (1 if index < extra else 0)


def _split_in_units(name: str, shape: tuple[int, ...], dim: int, units: int, model: _Model, kind: ShardKind) -> TensorShard:
    """Split ``dim`` into ``units`` equal units (heads, or single channels) over the ranks."""
    size = shape[dim]
    if size % units:
        raise LayoutError(f"{name}: size {size} of dim {dim} is not a multiple of {units} heads")
    unit = size // units
    if units % model.tp_size:
        raise LayoutError(f"{name}: {units} heads/channels do not split over tp_size {model.tp_size}")
    start, length = _range(units, model.tp_size, model.rank)
    return TensorShard(name, kind, dim, start * unit, length * unit)


def _heads(dim: int) -> _Rule:
    kind = ShardKind.COLUMN if dim == 0 else ShardKind.ROW
    return lambda name, shape, model: _split_in_units(name, shape, dim, model.num_heads, model, kind)


def _kv_heads(name: str, shape: tuple[int, ...], model: _Model) -> TensorShard:
    kv, tp = model.num_kv_heads, model.tp_size
    if kv >= tp:
        return _split_in_units(name, shape, 0, kv, model, ShardKind.COLUMN)
    if tp % kv:
        raise LayoutError(f"{name}: tp_size {tp} is neither a divisor nor a multiple of {kv} KV heads")
    head_size = shape[0] // kv
    head = model.rank // (tp // kv)  # the KV head this rank's query heads attend with
    return TensorShard(name, ShardKind.COLUMN, 0, head * head_size, head_size)


def _channels(dim: int) -> _Rule:
    kind = ShardKind.COLUMN if dim == 0 else ShardKind.ROW
    return lambda name, shape, model: _split_in_units(name, shape, dim, shape[dim], model, kind)


def _vocab(name: str, shape: tuple[int, ...], model: _Model) -> TensorShard:
    if shape[0] < model.tp_size:
        raise LayoutError(f"{name}: {shape[0]} vocabulary rows cannot split over tp_size {model.tp_size}")
    start, length = _range(shape[0], model.tp_size, model.rank)
    return TensorShard(name, ShardKind.VOCAB, 0, start, length)


def _expert(name: str, shape: tuple[int, ...], model: _Model) -> TensorShard | None:
    expert = int(re.search(r"\.experts\.(\d+)\.", name).group(1))  # type: ignore[union-attr]
    if model.num_experts % model.tp_size:
        raise LayoutError(f"{model.num_experts} experts do not split over tp_size {model.tp_size}")
    if not 0 <= expert < model.num_experts:
        raise LayoutError(f"{name}: expert {expert} outside the config's {model.num_experts} experts")
    owner = expert // (model.num_experts // model.tp_size)
    return TensorShard(name, ShardKind.EXPERT) if owner == model.rank else None


_LAYER_RULES: tuple[tuple[re.Pattern[str], _Rule], ...] = tuple(
    (re.compile(pattern), rule)
    for pattern, rule in (
        (r"self_attn\.(q_proj|q_b_proj|kv_b_proj)\.(weight|bias)", _heads(0)),
        (r"self_attn\.(k_proj|v_proj)\.(weight|bias)", _kv_heads),
        (r"self_attn\.o_proj\.weight", _heads(1)),
        (r"self_attn\.o_proj\.bias", _replicated),
        (r"self_attn\.(q_a_proj|kv_a_proj_with_mqa)\.(weight|bias)", _replicated),
        (r"self_attn\.(q_a_layernorm|kv_a_layernorm|q_norm|k_norm)\.weight", _replicated),
        (r"mlp\.experts\.\d+\.(gate_proj|up_proj|down_proj)\.weight", _expert),
        (r"mlp\.gate\.(weight|e_score_correction_bias)", _replicated),
        (r"mlp\.(shared_experts\.)?(gate_proj|up_proj)\.(weight|bias)", _channels(0)),
        (r"mlp\.(shared_experts\.)?down_proj\.weight", _channels(1)),
        (r"mlp\.(shared_experts\.)?down_proj\.bias", _replicated),
        (r"(input_layernorm|post_attention_layernorm)\.weight", _replicated),
    )
)
_MODEL_RULES: dict[str, _Rule] = {
    "model.embed_tokens.weight": _vocab,
    "lm_head.weight": _vocab,
    "model.norm.weight": _replicated,
}
_LAYER_PREFIX = re.compile(r"model\.layers\.\d+\.")


def _shard(name: str, shape: tuple[int, ...], model: _Model) -> TensorShard | None:
    rule = _MODEL_RULES.get(name)
    if rule is None:
        prefix = _LAYER_PREFIX.match(name)
        if prefix is not None:
            rest = name[prefix.end():]
            rule = next((r for pattern, r in _LAYER_RULES if pattern.fullmatch(rest)), None)
    if rule is None:
        raise LayoutError(f"no tensor-parallel rule for {name!r} (shape {shape})")
    return rule(name, shape, model)


def plan_tensor_parallel(
    config: Mapping[str, object], shapes: Mapping[str, Sequence[int]], tp_size: int, rank: int
) -> ShardPlan:
    """The shards TP rank ``rank`` of ``tp_size`` serves.

    ``config`` is the HF ``config.json`` (DeepSeek-V3 / Kimi K2 or Llama / Qwen keys);
    ``shapes`` every tensor's shape by HF name (a state dict's, or ``shapes_of_layout``).
    """
    if tp_size < 1 or not 0 <= rank < tp_size:
        raise LayoutError(f"rank {rank} is not in [0, tp_size={tp_size})")
    heads = int(config["num_attention_heads"])  # type: ignore[call-overload]
    model = _Model(
        num_heads=heads,
        num_kv_heads=int(config.get("num_key_value_heads") or heads),  # type: ignore[call-overload]
        num_experts=int(config.get("n_routed_experts") or 0),  # type: ignore[call-overload]
        tp_size=tp_size,
        rank=rank,
    )
    shards = (_shard(name, tuple(int(s) for s in shape), model) for name, shape in shapes.items())
    return ShardPlan(tp_size, rank, tuple(shard for shard in shards if shard is not None))


def shapes_of_layout(buckets: Sequence[BucketLayout]) -> dict[str, tuple[int, ...]]:
    """Every tensor's shape in a version's bucket layout (pieces of split tensors once)."""
    return {piece.name: tuple(piece.spec.shape) for bucket in buckets for piece in bucket.pieces}
