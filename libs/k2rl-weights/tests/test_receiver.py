"""Writer -> IPC slot -> receiver round trips: bit-exact, sharded, split, corruption refused."""

import pytest
import torch

from k2rl.weights import (
    ChecksumAlgorithm,
    ChecksumMismatch,
    LayoutError,
    Selector,
    WeightReceiver,
    WeightStager,
    create_buffer,
    describe_shm,
    select_shard,
    tensor_bytes,
)


def _params() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "embed.weight": torch.randn(64, 24, generator=g).to(torch.bfloat16),   # 3072 bytes: split
        "layers.0.q.weight": torch.randn(16, 8, generator=g),
        "layers.0.norm.weight": torch.randn(8, generator=g).to(torch.float16),
        "layers.0.experts": torch.randn(4, 6, 5, generator=g),
        "step": torch.tensor(7, dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }


def _transfer(stager: WeightStager, params: dict[str, torch.Tensor], receiver: WeightReceiver, version: int,
              corrupt_bucket: int | None = None, destinations: dict[str, torch.Tensor] | None = None,
              slot_offset: int = 0) -> dict[str, torch.Tensor]:
    """Play the engine: copy each staged bucket into one of two slots (at ``slot_offset``)
    and feed the receiver."""
    staged = stager.stage(params)
    slots = [create_buffer(stager.bucket_bytes + slot_offset, "slot") for _ in range(2)]
    try:
        receiver.begin(version, len(staged.plan.buckets), {i: describe_shm(s) for i, s in enumerate(slots)},
                       destinations=destinations)
        for bucket in staged.plan.buckets:
            slot = bucket.index % 2
            region = slots[slot].tensor[slot_offset:slot_offset + bucket.byte_size]
            region.copy_(staged.bucket_bytes(stager.staging, bucket.index))
            if bucket.index == corrupt_bucket:
                region[bucket.byte_size // 2] ^= 1
            receiver.load_bucket(bucket, slot, slot_offset)
        return receiver.commit(version, len(staged.plan.buckets))
    finally:
        for s in slots:
            s.close()


@pytest.mark.parametrize("algorithm", list(ChecksumAlgorithm))
def test_full_round_trip_is_bit_identical(algorithm: ChecksumAlgorithm) -> None:
    params = _params()
    stager = WeightStager(bucket_bytes=1024, algorithm=algorithm)
    receiver = WeightReceiver()
    try:
        received = _transfer(stager, params, receiver, version=1)
    finally:
        stager.close()
        receiver.close()
    assert received.keys() == params.keys()
    for name, tensor in params.items():
        assert received[name].dtype == tensor.dtype and received[name].shape == tensor.shape
        assert torch.equal(tensor_bytes(received[name]), tensor_bytes(tensor)), name


def test_shard_receiver_gets_only_its_slices_including_of_a_split_tensor() -> None:
    params = _params()
    selectors = [Selector("embed.weight", dim=0, start=32, length=32), Selector("layers.0.q.weight", dim=1, start=4, length=4),
                 Selector("layers.0.experts", dim=0, start=2, length=1)]
    stager, receiver = WeightStager(bucket_bytes=1024), WeightReceiver(selectors)
    try:
        received = _transfer(stager, params, receiver, version=3)
    finally:
        stager.close()
        receiver.close()
    assert received.keys() == {s.name for s in selectors}
    assert torch.equal(received["embed.weight"], params["embed.weight"][32:])
    assert torch.equal(received["layers.0.q.weight"], params["layers.0.q.weight"][:, 4:])
    assert received["layers.0.q.weight"].is_contiguous()
    assert torch.equal(received["layers.0.experts"], params["layers.0.experts"][2:3])


def test_corrupted_bucket_is_refused_and_nothing_is_handed_over() -> None:
    stager, receiver = WeightStager(bucket_bytes=1024), WeightReceiver()
    try:
        with pytest.raises(ChecksumMismatch, match="bucket 1"):
            _transfer(stager, _params(), receiver, version=2, corrupt_bucket=1)
        receiver.abort()
        with pytest.raises(LayoutError, match="does not match"):
            receiver.commit(2, 1)
        # The same receiver takes the next (clean) version normally.
        assert _transfer(stager, _params(), receiver, version=3).keys() == _params().keys()
    finally:
        stager.close()
        receiver.close()


@pytest.mark.parametrize("selectors", [[], [Selector("embed.weight", dim=0, start=16, length=40),
                                             Selector("layers.0.q.weight", dim=1, start=4, length=4), Selector("step")]])
def test_updates_land_in_the_given_destinations_in_place(selectors: list[Selector]) -> None:
    """Standby tensors are written in place (no new storage); a misfit one is replaced."""
    params = _params()
    stager, receiver = WeightStager(bucket_bytes=1024), WeightReceiver(selectors)
    try:
        first = _transfer(stager, params, receiver, version=1, slot_offset=256)
        first["mask"] = torch.zeros(5, dtype=torch.bool)  # wrong shape: must not be used
        where = {name: tensor.data_ptr() for name, tensor in first.items()}
        changed = {name: t + 1 if t.is_floating_point() else t for name, t in params.items()}
        second = _transfer(stager, changed, receiver, version=2, destinations=first, slot_offset=256)
    finally:
        stager.close()
        receiver.close()
    expected = {s.name: s.apply(changed[s.name]) for s in selectors} if selectors else changed
    assert second.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor_bytes(second[name]), tensor_bytes(tensor)), name
        assert (second[name].data_ptr() == where[name]) == (name != "mask"), name


def test_out_of_order_and_incomplete_updates_are_refused() -> None:
    params = _params()
    stager, receiver = WeightStager(bucket_bytes=1024), WeightReceiver()
    staged = stager.stage(params)
    slot = create_buffer(1024, "slot")
    try:
        receiver.begin(1, len(staged.plan.buckets), {0: describe_shm(slot)})
        with pytest.raises(LayoutError, match="expected bucket 0"):
            receiver.load_bucket(staged.plan.buckets[1], 0)
        slot.tensor[:staged.plan.buckets[0].byte_size].copy_(staged.bucket_bytes(stager.staging, 0))
        receiver.load_bucket(staged.plan.buckets[0], 0)
        with pytest.raises(LayoutError, match="1/"):
            receiver.commit(1, len(staged.plan.buckets))
        with pytest.raises(LayoutError, match="slot 5"):
            receiver.begin(1, 1, {0: describe_shm(slot)})
            receiver.load_bucket(staged.plan.buckets[0], 5)
    finally:
        slot.close()
        stager.close()
        receiver.close()


def test_select_shard_locates_pieces_and_validates_selectors() -> None:
    stager = WeightStager(bucket_bytes=1024)
    try:
        plan = stager.stage(_params()).plan
    finally:
        stager.close()
    entries = select_shard(plan.buckets, [Selector("embed.weight", dim=1, start=0, length=12)])
    assert [e.piece.tensor_byte_offset for e in entries] == [0, 1024, 2048]
    assert len({e.bucket_index for e in entries}) == 3
    assert len(select_shard(plan.buckets)) == sum(len(b.pieces) for b in plan.buckets)
    with pytest.raises(LayoutError, match="not in this version"):
        select_shard(plan.buckets, [Selector("nope")])
    with pytest.raises(LayoutError, match="out of range"):
        select_shard(plan.buckets, [Selector("embed.weight", dim=0, start=60, length=8)])
    with pytest.raises(LayoutError, match="dim 3"):
        select_shard(plan.buckets, [Selector("embed.weight", dim=3, start=0, length=1)])
