"""Atomic weight updates: domain API and the UpdateWeights stream over k2rl.weights (shm)."""

from __future__ import annotations

import queue
from pathlib import Path

import grpc
import pytest
import torch

from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import serve_in_process
from k2rl.inference.engine import Engine, EngineConfig
from k2rl.inference.service import SERVICE
from k2rl.inference.testing import TinyTokenizer, request, run_to_completion, tokens_of
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.inference.weights import InFlightPolicy, LayoutMismatch, WeightUpdateOutcome
from k2rl.models import build_model, get_preset, load_model, save_model
from k2rl.models.testing import tiny_model
from k2rl.models.tokenizer import load_tokenizer
from k2rl.weights import ChecksumAlgorithm, WeightStager, create_buffer, describe_shm
from k2rl.weights import proto as wire

PROMPTS = ([5, 17, 3, 42, 8], [9, 1, 60, 2], [33, 12, 7, 7, 70, 4, 1])


def _greedy(engine: Engine, prompts=PROMPTS, max_tokens: int = 6) -> list[list[int]]:
    for i, prompt in enumerate(prompts):
        engine.add_request(request(f"g{i}", list(prompt), temperature=0.0, max_tokens=max_tokens, ignore_eos=True))
    out = run_to_completion(engine)
    return [tokens_of(out[(f"g{i}", 0)]) for i in range(len(prompts))]


def test_outputs_after_an_update_equal_a_fresh_engine_on_the_new_checkpoint(tmp_path: Path) -> None:
    old, new = tiny_model("mla", seed=0, eos_token_id=90), tiny_model("mla", seed=5, eos_token_id=90)
    save_model(new, tmp_path / "v2")
    engine = Engine(old, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))
    before = _greedy(engine)  # fills the prefix cache with blocks of the old weights
    outcome = engine.apply_weights(2, dict(new.state_dict()))
    assert outcome is WeightUpdateOutcome.APPLIED and engine.weight_version == 2
    fresh = Engine(load_model(tmp_path / "v2").eval(), TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))
    after = _greedy(engine)
    assert after == _greedy(fresh)
    assert after != before
    assert engine.apply_weights(2, new.state_dict()) is WeightUpdateOutcome.ALREADY_CURRENT
    assert engine.apply_weights(1, new.state_dict()) is WeightUpdateOutcome.STALE_VERSION


def test_layout_mismatch_leaves_the_served_version_untouched() -> None:
    model = tiny_model("mla", seed=0, eos_token_id=90)
    engine = Engine(model, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))
    before = _greedy(engine)
    state = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    missing = dict(state)
    missing.pop("model.norm.weight")
    with pytest.raises(LayoutMismatch, match="not covered"):
        engine.apply_weights(3, missing)
    wrong = dict(state, **{"model.norm.weight": torch.zeros(3)})
    with pytest.raises(LayoutMismatch, match="model.norm.weight"):
        engine.apply_weights(3, wrong)
    assert engine.weight_version == 0 and _greedy(engine) == before


def test_in_flight_policies_refuse_pause_and_abort() -> None:
    old, new = tiny_model("mla", seed=0, eos_token_id=90), tiny_model("mla", seed=5, eos_token_id=90)
    old_prefix = _greedy(Engine(old, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64)),
                         [PROMPTS[0]], max_tokens=3)[0]
    engine = Engine(old, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))  # swaps old's storage
    engine.add_request(request("busy", list(PROMPTS[0]), temperature=0.0, max_tokens=8, ignore_eos=True))
    for _ in range(3):
        engine.step()
    assert engine.apply_weights(2, new.state_dict(), InFlightPolicy.REFUSE) is WeightUpdateOutcome.BUSY
    # PAUSE: the request is recomputed under the new weights and records the switch.
    assert engine.apply_weights(2, new.state_dict(), InFlightPolicy.PAUSE) is WeightUpdateOutcome.APPLIED
    updates = [u for key, us in run_to_completion(engine).items() for u in us]
    tokens = tokens_of(updates)
    assert {u.weight_version for u in updates} == {2} and len(tokens) == 5
    # Tokens after the switch are what the new model continues with from the old prefix.
    fresh = Engine(new, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))
    fresh.add_request(request("c", list(PROMPTS[0]), temperature=0.0, max_tokens=8, ignore_eos=True,
                              resume_output_token_ids=old_prefix))
    assert tokens_of(run_to_completion(fresh)[("c", 0)]) == tokens
    # ABORT: running requests end with ABORT before the swap.
    engine.add_request(request("gone", list(PROMPTS[1]), max_tokens=50, ignore_eos=True))
    engine.step()
    third = tiny_model("mla", seed=9, eos_token_id=90)
    assert engine.apply_weights(3, third.state_dict(), InFlightPolicy.ABORT) is WeightUpdateOutcome.APPLIED
    (final,) = [u for u in engine.drain_updates() if u.finish_reason is not None]
    assert final.finish_reason.value == "abort" and not engine.has_work


def _update(stub, params: dict[str, torch.Tensor], version: int, corrupt: bool = False):
    """Play the checkpoint engine: stage into shm, move buckets through two slots, reusing a
    slot only after the replica acknowledged the bucket in it (per-bucket flow control)."""
    stager = WeightStager(bucket_bytes=1 << 20, algorithm=ChecksumAlgorithm.CRC32)
    staged = stager.stage(params)
    slots = [create_buffer(stager.bucket_bytes, "slot") for _ in range(2)]
    buckets = staged.plan.buckets
    freed: queue.Queue[int] = queue.Queue()

    def requests():
        yield inference_pb2.UpdateWeightsRequest(begin=inference_pb2.UpdateWeightsBegin(
            version=common_pb2.WeightVersion(version=version), bucket_count=len(buckets),
            slots=[inference_pb2.IpcSlot(slot=i, handle=wire.descriptor_to_proto(describe_shm(s)))
                   for i, s in enumerate(slots)]))
        for bucket in buckets:
            slot = bucket.index % 2
            if bucket.index >= 2:
                try:
                    freed.get(timeout=30)
                except queue.Empty:
                    return  # the replica stopped acknowledging (it refused the update)
            slots[slot].tensor[: bucket.byte_size].copy_(staged.bucket_bytes(stager.staging, bucket.index))
            if corrupt and bucket.index == len(buckets) - 1:
                slots[slot].tensor[bucket.byte_size // 2] ^= 1
            yield inference_pb2.UpdateWeightsRequest(
                bucket=inference_pb2.UpdateWeightsBucket(bucket=wire.bucket_to_proto(bucket), slot=slot))
        yield inference_pb2.UpdateWeightsRequest(
            commit=inference_pb2.UpdateWeightsCommit(version=version, bucket_count=len(buckets)))

    responses = []
    try:
        for response in stub.UpdateWeights(requests(), timeout=60):
            responses.append(response)
            if response.WhichOneof("event") == "bucket_loaded":
                freed.put(response.bucket_loaded.slot)
    finally:
        stager.close()
        for s in slots:
            s.close()
    return responses, len(buckets)


def _greedy_rpc(stub, prompt: list[int]) -> tuple[list[int], set[int]]:
    sampling = common_pb2.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)
    chunks = list(stub.Generate(inference_pb2.GenerateRequest(
        request_id="q", prompt_token_ids=inference_pb2.TokenIds(ids=prompt), sampling_params=sampling), timeout=60))
    return [t for c in chunks for t in c.token_ids], {c.weight_version for c in chunks}


def test_update_weights_rpc_over_shared_memory(tmp_path: Path) -> None:
    new = build_model(get_preset("k2-nano"), seed=5).eval()
    save_model(new, tmp_path / "v7")
    prompt = list(b"weights")
    fresh = Engine(load_model(tmp_path / "v7").eval(), load_tokenizer("k2-nano"), EngineConfig(num_kv_blocks=16))
    (expected,) = _greedy(fresh, [prompt])
    with serve_in_process(SERVICE, http_port=-1, num_kv_blocks=16) as runtime:
        stub = create_stub(inference_pb2_grpc.InferenceServiceStub, runtime.settings.address, ClientOptions())
        try:
            before, _ = _greedy_rpc(stub, prompt)
            responses, count = _update(stub, dict(new.state_dict()), 7, corrupt=True)
            assert responses[-1].result.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH
            assert responses[-1].result.current_version.version == 0
            assert _greedy_rpc(stub, prompt)[0] == before  # still serving the old weights

            responses, count = _update(stub, dict(new.state_dict()), 7)
            loaded = [r.bucket_loaded.bucket_index for r in responses if r.WhichOneof("event") == "bucket_loaded"]
            assert loaded == list(range(count))
            result = responses[-1].result
            assert result.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED and result.current_version.version == 7
            assert _greedy_rpc(stub, prompt) == (expected, {7})

            bad = iter([inference_pb2.UpdateWeightsRequest(commit=inference_pb2.UpdateWeightsCommit(version=8))])
            with pytest.raises(grpc.RpcError) as error:
                list(stub.UpdateWeights(bad, timeout=30))
            assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        finally:
            close_stub(stub)
