"""Tensor-parallel shard plans on tiny K2 (MLA + MoE) and Llama/Qwen (GQA) models: the
ranks' shards tile every tensor exactly once, and a rank receives its shard from buckets."""

from __future__ import annotations

import pytest
import torch

from k2rl.weights import (
    LayoutError,
    ShardKind,
    WeightReceiver,
    WeightStager,
    create_buffer,
    describe_shm,
    plan_tensor_parallel,
    shapes_of_layout,
)

models = pytest.importorskip("k2rl.models")
from k2rl.models.testing import tiny_model  # noqa: E402


def _state(kind: str, **changes) -> tuple[dict, dict[str, torch.Tensor]]:
    model = tiny_model(kind, **changes)
    return models.to_hf_config(model.config), {k: v.detach() for k, v in model.state_dict().items()}


def _plans(config, state, tp_size):
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    return [plan_tensor_parallel(config, shapes, tp_size, rank) for rank in range(tp_size)]


CASES = [("mla", {}), ("mla", {"q_lora_rank": None}), ("gqa", {}), ("gqa", {"model_type": "llama", "qk_norm": False,
                                                                            "vocab_size": 97})]


@pytest.mark.parametrize("tp_size", [1, 2, 4])
@pytest.mark.parametrize(("kind", "changes"), CASES)
def test_ranks_tile_every_tensor_exactly_once(kind, changes, tp_size):
    config, state = _state(kind, **changes)
    plans = _plans(config, state, tp_size)
    for name, full in state.items():
        held = [(plan.rank, plan[name]) for plan in plans if name in {s.name for s in plan}]
        assert held, f"{name} is on no rank"
        kinds = {shard.kind for _, shard in held}
        assert len(kinds) == 1
        slices = {}
        for _, shard in held:
            part = shard.take(full)
            key = (shard.dim, shard.start, shard.length)
            if key in slices:  # replicated (wholly or, for GQA KV heads, per group): identical bytes
                assert torch.equal(slices[key], part)
            slices[key] = part
        if kinds == {ShardKind.EXPERT}:
            assert len(held) == 1 and held[0][1].dim is None
            continue
        if kinds == {ShardKind.REPLICATED}:
            assert len(held) == tp_size and list(slices) == [(None, 0, 0)]
            continue
        assert len(held) == tp_size
        ordered = sorted(slices.items(), key=lambda item: item[0][1])
        dims = {dim for (dim, _, _), _ in ordered}
        assert len(dims) == 1
        # Distinct slices are contiguous, disjoint, cover the dim, and concatenate to the tensor.
        position = 0
        for (_, start, length), _ in ordered:
            assert start == position and length > 0
            position += length
        assert torch.equal(torch.cat([part for _, part in ordered], dim=dims.pop()), full)
        assert sum(p.numel() for _, p in ordered) == full.numel()


def test_splits_follow_heads_experts_and_vocab():
    config, state = _state("mla")
    plans = _plans(config, state, 4)
    layer = "model.layers.1."
    heads, nope, rope, v = 4, 16, 8, 12
    for plan in plans:
        r = plan.rank
        assert plan[layer + "self_attn.q_b_proj.weight"].start == r * (nope + rope)
        assert plan[layer + "self_attn.kv_b_proj.weight"].start == r * (nope + v)
        o = plan[layer + "self_attn.o_proj.weight"]
        assert (o.kind, o.dim, o.start, o.length) == (ShardKind.ROW, 1, r * v, heads * v // 4)
        assert plan[layer + "self_attn.kv_a_proj_with_mqa.weight"].kind is ShardKind.REPLICATED
        experts = sorted(int(s.name.split(".")[5]) for s in plan if ".experts." in s.name and "gate_proj" in s.name
                         and s.name.startswith(layer))
        assert experts == [2 * r, 2 * r + 1]  # 8 experts, 2 per rank
        assert plan[layer + "mlp.shared_experts.down_proj.weight"].kind is ShardKind.ROW
    # Uneven vocabulary: balanced ranges, the first rank one row longer.
    config, state = _state("gqa", vocab_size=97)
    lengths = [plan["lm_head.weight"].length for plan in _plans(config, state, 4)]
    assert lengths == [25, 24, 24, 24]


def test_gqa_kv_heads_replicate_over_the_ranks_that_use_them():
    config, state = _state("gqa")  # 4 query heads, 2 KV heads of 16
    plans = _plans(config, state, 4)
    q_per_kv = config["num_attention_heads"] // config["num_key_value_heads"]
    for plan in plans:
        q = plan["model.layers.0.self_attn.q_proj.weight"]
        k = plan["model.layers.0.self_attn.k_proj.weight"]
        query_head = q.start // 16
        assert k.start // 16 == query_head // q_per_kv and k.length == 16


def test_unknown_tensors_and_impossible_splits_are_errors():
    config, state = _state("mla")
    shapes = {name: tuple(t.shape) for name, t in state.items()}
    with pytest.raises(LayoutError, match="no tensor-parallel rule"):
        plan_tensor_parallel(config, {**shapes, "model.layers.0.self_attn.o_proj.weight_scale_inv": (1, 1)}, 2, 0)
    with pytest.raises(LayoutError, match="do not split over tp_size 3"):
        plan_tensor_parallel(config, shapes, 3, 0)
    with pytest.raises(LayoutError, match="rank 2"):
        plan_tensor_parallel(config, shapes, 2, 2)


def test_a_rank_receives_exactly_its_shard_from_the_buckets():
    config, state = _state("mla")
    stager = WeightStager(bucket_bytes=4096)
    slot = create_buffer(stager.bucket_bytes, "tp_slot")
    try:
        staged = stager.stage(state)
        buckets = staged.plan.buckets
        plan = plan_tensor_parallel(config, shapes_of_layout(buckets), 2, 1)
        wanted_buckets = {entry.bucket_index for entry in plan.locate(buckets)}
        assert wanted_buckets and len(wanted_buckets) <= len(buckets)
        receiver = WeightReceiver(plan.selectors())
        try:
            receiver.begin(1, len(buckets), {0: describe_shm(slot)})
            for bucket in buckets:
                slot.tensor[: bucket.byte_size].copy_(staged.bucket_bytes(stager.staging, bucket.index))
                receiver.load_bucket(bucket, 0)
            received = receiver.commit(1, len(buckets))
        finally:
            receiver.close()
    finally:
        slot.close()
        stager.close()
    expected = plan.extract(state)
    assert set(received) == set(expected)
    for name, tensor in expected.items():
        assert torch.equal(received[name], tensor), name
