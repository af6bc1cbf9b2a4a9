"""The inference service over gRPC: streaming Generate, Abort, Sleep/WakeUp, model info,
stats and metrics, on the k2-nano preset served in-process on loopback."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import assert_serves_contract, serve_in_process
from k2rl.inference.service import SERVICE
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc

PROMPT = list(b"The quick brown fox")


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[object, inference_pb2_grpc.InferenceServiceStub]]:
    with serve_in_process(SERVICE, http_port=-1, num_kv_blocks=64, block_size=8) as runtime:
        stub = create_stub(inference_pb2_grpc.InferenceServiceStub, runtime.settings.address, ClientOptions())
        try:
            yield runtime, stub
        finally:
            close_stub(stub)


def _generate(stub, request_id: str, max_tokens: int, **params) -> list[inference_pb2.GenerateResponse]:
    sampling = common_pb2.SamplingParams(max_tokens=max_tokens, ignore_eos=True, **params)
    request = inference_pb2.GenerateRequest(
        request_id=request_id, prompt_token_ids=inference_pb2.TokenIds(ids=PROMPT), sampling_params=sampling
    )
    return list(stub.Generate(request, timeout=60))


def test_serves_health_and_reflection_for_its_contract() -> None:
    with serve_in_process(SERVICE, auth_token="t", http_port=-1, num_kv_blocks=16) as runtime:
        assert_serves_contract(runtime, "k2rl.inference.v1.InferenceService")


def test_generate_streams_tokens_logprobs_and_a_final_chunk(served) -> None:
    _, stub = served
    chunks = _generate(stub, "g1", 5, n=2, seed=3)
    by_sample: dict[int, list[int]] = {0: [], 1: []}
    for chunk in chunks:
        assert len(chunk.token_ids) == len(chunk.logprobs)
        assert all(lp <= 0.0 for lp in chunk.logprobs)
        by_sample[chunk.sample_index] += chunk.token_ids
    assert [len(v) for v in by_sample.values()] == [5, 5]
    finals = [c for c in chunks if c.finish_reason != common_pb2.FINISH_REASON_UNSPECIFIED]
    assert {c.sample_index for c in finals} == {0, 1}
    assert all(c.finish_reason == common_pb2.FINISH_REASON_LENGTH for c in finals)
    assert all(c.usage.prompt_tokens == len(PROMPT) and c.usage.completion_tokens == 5 for c in finals)
    again = _generate(stub, "g2", 5, n=2, seed=3)
    assert [c.token_ids for c in again if c.sample_index == 0] == [c.token_ids for c in chunks if c.sample_index == 0]


def test_generate_rejects_bad_input_with_invalid_argument(served) -> None:
    _, stub = served
    bad = inference_pb2.GenerateRequest(request_id="bad", prompt_token_ids=inference_pb2.TokenIds(ids=[1, 10**6]))
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(bad, timeout=30))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "vocabulary" in error.value.details()
    with pytest.raises(grpc.RpcError) as error:
        list(stub.Generate(inference_pb2.GenerateRequest(request_id="none"), timeout=30))
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_abort_returns_the_partial_generation_and_ends_the_stream(served) -> None:
    _, stub = served
    sampling = common_pb2.SamplingParams(max_tokens=1000, ignore_eos=True)
    request = inference_pb2.GenerateRequest(
        request_id="long", prompt_token_ids=inference_pb2.TokenIds(ids=PROMPT), sampling_params=sampling
    )
    stream = stub.Generate(request, timeout=60)
    received = [next(stream)]
    aborted: list[inference_pb2.AbortResponse] = []
    thread = threading.Thread(target=lambda: aborted.append(stub.Abort(inference_pb2.AbortRequest(request_ids=["long", "nope"]), timeout=30)))
    thread.start()
    received += list(stream)
    thread.join(30)
    (response,) = aborted
    assert list(response.not_running_request_ids) == ["nope"]
    (partial,) = response.partial_generations
    streamed = [t for c in received for t in c.token_ids]
    assert list(partial.output_token_ids) == streamed and 0 < len(streamed) < 1000
    assert received[-1].finish_reason == common_pb2.FINISH_REASON_ABORT
    assert [(t.output_token_start, t.output_token_end) for t in partial.turns] == [(0, len(streamed))]


def test_sleep_refuses_generate_until_wake_up(served) -> None:
    _, stub = served
    slept = stub.Sleep(inference_pb2.SleepRequest(level=inference_pb2.SLEEP_LEVEL_1), timeout=30)
    assert slept.state == inference_pb2.SLEEP_STATE_LEVEL_1 and slept.freed_device_bytes > 0
    try:
        with pytest.raises(grpc.RpcError) as error:
            _generate(stub, "asleep", 2)
        assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
        assert stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=30).sleep_state == inference_pb2.SLEEP_STATE_LEVEL_1
    finally:
        woke = stub.WakeUp(inference_pb2.WakeUpRequest(), timeout=30)
    assert woke.state == inference_pb2.SLEEP_STATE_AWAKE
    assert len([t for c in _generate(stub, "awake", 2) for t in c.token_ids]) == 2
    with pytest.raises(grpc.RpcError) as error:
        stub.Sleep(inference_pb2.SleepRequest(), timeout=30)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_model_info_stats_and_metrics(served) -> None:
    runtime, stub = served
    _generate(stub, "m", 3)
    info = stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=30)
    assert info.architecture == "DeepseekV3ForCausalLM" and info.model_preset == "k2-nano"
    assert info.backend == inference_pb2.INFERENCE_BACKEND_NATIVE and info.vocab_size == 512
    assert info.max_context_length == 64 * 8 and info.dtype == common_pb2.TENSOR_DTYPE_FLOAT32
    assert 257 in info.tokenizer.eos_token_ids and '"kv_lora_rank": 64' in info.config_json
    stats = stub.GetStats(inference_pb2.GetStatsRequest(), timeout=30)
    assert stats.generated_tokens_total >= 3 and stats.kv_cache_capacity_tokens == 64 * 8
    assert stats.running_requests == 0 and stats.prompt_tokens_total >= len(PROMPT)
    url = f"http://127.0.0.1:{runtime.metrics_endpoint.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    for series in ("k2rl_inference_time_to_first_token_seconds_bucket", "k2rl_inference_kv_cache_usage",
                   "k2rl_inference_running_requests", "k2rl_inference_weight_version",
                   "k2rl_inference_generation_tokens_per_second", "k2rl_inference_time_per_output_token_seconds_count"):
        assert series in text, series
