"""Weight updates received in place into the standby parameter set (double buffering).

Updates go through the real UpdateWeights path (``WeightUpdateSession`` ->
``k2rl.weights.WeightReceiver`` -> shm IPC slots filled by ``RingPublisher``), driven in
process without gRPC.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from k2rl.common.v1 import common_pb2
from k2rl.inference.engine import Engine, EngineConfig
from k2rl.inference.runner import EngineRunner
from k2rl.inference.testing import (
    RingPublisher,
    TinyTokenizer,
    request,
    run_to_completion,
    tokens_of,
)
from k2rl.inference.update import WeightUpdateSession
from k2rl.inference.v1 import inference_pb2
from k2rl.inference.weights import StandbyWeights, WeightStager, served_tensors
from k2rl.models.testing import tiny_model
from k2rl.weights import proto as wire

PROMPTS = ([5, 17, 3, 42, 8], [9, 1, 60, 2], [33, 12, 7, 7, 70, 4, 1])
CONFIG = EngineConfig(block_size=4, num_kv_blocks=64)
APPLIED = common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED


def _model(version: int):
    """The weights of ``version`` (a deterministic tiny MLA model per version)."""
    return tiny_model("mla", seed=10 * version, eos_token_id=90)


def _greedy(engine: Engine) -> list[list[int]]:
    for i, prompt in enumerate(PROMPTS):
        engine.add_request(request(f"g{i}", list(prompt), temperature=0.0, max_tokens=6, ignore_eos=True))
    out = run_to_completion(engine)
    return [tokens_of(out[(f"g{i}", 0)]) for i in range(len(PROMPTS))]


def _expected(version: int) -> list[list[int]]:
    return _greedy(Engine(_model(version), TinyTokenizer(), CONFIG))


def _update(runner: EngineRunner, version: int, corrupt_bucket: int | None = None) -> inference_pb2.UpdateWeightsResult:
    """One UpdateWeights stream of ``version``'s weights; buckets small enough that large
    tensors arrive split over several of them."""
    publisher = RingPublisher(dict(_model(version).state_dict()), bucket_bytes=1 << 14)
    buckets = publisher.buckets

    def requests() -> Iterator[inference_pb2.UpdateWeightsRequest]:
        yield inference_pb2.UpdateWeightsRequest(begin=inference_pb2.UpdateWeightsBegin(
            version=common_pb2.WeightVersion(version=version), bucket_count=len(buckets),
            slots=[inference_pb2.IpcSlot(slot=i, handle=wire.descriptor_to_proto(d))
                   for i, d in publisher.slots.items()]))
        for bucket in buckets:
            # The session pulls bucket i only after acknowledging bucket i - 2 (same slot).
            slot = publisher.place(bucket.index, corrupt=bucket.index == corrupt_bucket)
            yield inference_pb2.UpdateWeightsRequest(
                bucket=inference_pb2.UpdateWeightsBucket(bucket=wire.bucket_to_proto(bucket), slot=slot))
        yield inference_pb2.UpdateWeightsRequest(
            commit=inference_pb2.UpdateWeightsCommit(version=version, bucket_count=len(buckets)))

    try:
        return list(WeightUpdateSession(runner).run(requests()))[-1].result
    finally:
        publisher.close()


def _served_bytes(engine: Engine) -> int:
    """Parameters and persistent buffers: what an update rewrites and the standby set mirrors."""
    return sum(t.numel() * t.element_size() for t in served_tensors(engine.model).values())


def _pointers(engine: Engine) -> dict[str, int]:
    return {name: t.data_ptr() for name, t in served_tensors(engine.model).items()}


@pytest.fixture
def runner() -> Iterator[EngineRunner]:
    engine_runner = EngineRunner(Engine(_model(0), TinyTokenizer(), CONFIG)).start()
    try:
        yield engine_runner
    finally:
        engine_runner.stop()


def test_updates_alternate_two_parameter_sets_and_match_fresh_engines(runner: EngineRunner) -> None:
    engine = runner.engine
    assert engine.standby_weights is not None and engine.standby_weight_bytes() == 0  # on by default on CPU
    initial = _pointers(engine)
    served: dict[int, dict[str, int]] = {}
    for version in (1, 2, 3):
        result = _update(runner, version)
        assert result.outcome == APPLIED and result.current_version.version == version
        assert runner.call(_greedy) == _expected(version)
        served[version] = _pointers(engine)
    assert engine.standby_weight_bytes() == _served_bytes(engine)
    # v1 landed in the set allocated by the first update, v2 in the initial storage, v3 in v1's.
    assert set(served[1].values()).isdisjoint(initial.values())
    assert served[2] == initial
    assert served[3] == served[1]


def test_corrupted_bucket_leaves_the_served_set_and_the_next_update_applies(runner: EngineRunner) -> None:
    engine = runner.engine
    assert _update(runner, 1).outcome == APPLIED
    before, pointers = runner.call(_greedy), _pointers(engine)
    result = _update(runner, 2, corrupt_bucket=3)
    assert result.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH
    assert result.current_version.version == 1 and engine.weight_version == 1
    assert runner.call(_greedy) == before == _expected(1)
    assert _pointers(engine) == pointers
    # The standby set was written in part; the next update overwrites all of it and swaps.
    standby = {name: t.data_ptr() for name, t in engine.standby_weights.lend(served_tensors(engine.model), "probe").items()}
    engine.standby_weights.give_back("probe")
    result = _update(runner, 2)
    assert result.outcome == APPLIED and engine.weight_version == 2
    assert runner.call(_greedy) == _expected(2)
    assert _pointers(engine) == standby


def test_sleep_frees_the_standby_set_and_updates_after_wake_refill_it(runner: EngineRunner) -> None:
    engine = runner.engine
    assert _update(runner, 1).outcome == APPLIED
    held = engine.standby_weight_bytes()
    assert held == _served_bytes(engine) > 0
    runner.call(lambda e: e.sleep(1))  # CPU: the weights stay in place, and so does the standby set
    assert engine.standby_weight_bytes() == held
    runner.call(lambda e: e.wake_up())
    resident = engine.kv_cache_bytes() + engine.weight_bytes() + held
    assert runner.call(lambda e: e.sleep(2)) == resident
    assert engine.standby_weight_bytes() == 0 and engine.weight_version == 0
    assert _update(runner, 2).outcome == APPLIED  # wakes the weights, allocates a new standby set
    runner.call(lambda e: e.wake_up())
    assert runner.call(_greedy) == _expected(2)
    after_wake = _pointers(engine)
    assert _update(runner, 3).outcome == APPLIED
    assert _update(runner, 4).outcome == APPLIED
    assert _pointers(engine) == after_wake
    assert runner.call(_greedy) == _expected(4)


def test_without_standby_every_update_stages_into_fresh_tensors() -> None:
    engine = Engine(_model(0), TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64,
                                                             weight_update_standby=False))
    runner = EngineRunner(engine).start()
    try:
        assert engine.standby_weights is None
        for version in (1, 2):
            assert _update(runner, version).outcome == APPLIED
            assert runner.call(_greedy) == _expected(version)
        assert engine.standby_weight_bytes() == 0
    finally:
        runner.stop()


def test_the_standby_set_is_lent_to_one_update_at_a_time() -> None:
    model = _model(0)
    original = {name: t.clone() for name, t in served_tensors(model).items()}
    standby = StandbyWeights()
    first = WeightStager(model, 1, standby)
    second = WeightStager(model, 2, standby)  # concurrent: stages into fresh tensors
    assert first.destinations and not second.destinations
    first.close()
    second.close()
    third = WeightStager(model, 3, standby)
    assert {n: t.data_ptr() for n, t in third.destinations.items()} == {
        n: t.data_ptr() for n, t in first.destinations.items()}
    third.load_all(_model(3).state_dict())
    third.swap_into(model)  # the replaced storage is the next standby set
    assert all(torch.equal(t, original[n]) for n, t in standby.lend(served_tensors(model), "x").items())
    assert {n: t.data_ptr() for n, t in served_tensors(model).items()} == {
        n: t.data_ptr() for n, t in third.destinations.items()}
