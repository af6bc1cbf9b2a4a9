"""The vLLM backend against ``FakeVllm``, the declared double of the vLLM API it uses (real vLLM
needs a GPU and is not installed here): sampling-parameter translation, outputs, logprobs
and finish reasons, abort, sleep levels, weight updates and their in-flight policies, and
the service selecting it with ``backend: vllm``."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import grpc
import pytest
import torch

from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.errors import FailedPrecondition, InvalidArgument
from k2rl.core.testing import serve_in_process
from k2rl.inference import service as service_module
from k2rl.inference.engine import Engine, EngineConfig
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.sequence import FinishReason, VersionSpan
from k2rl.inference.service import SERVICE
from k2rl.inference.sleep import MemoryPool, SleepState
from k2rl.inference.testing import (
    FakeVllm,
    TinyTokenizer,
    logprobs_of,
    request,
    run_to_completion,
    tokens_of,
)
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.inference.vllm_backend import (
    VllmEngine,
    VllmOptions,
    finish_of,
    import_vllm,
    sampling_params,
)
from k2rl.inference.weights import InFlightPolicy, WeightUpdateOutcome, served_tensors
from k2rl.models import save_model
from k2rl.models.testing import tiny_model

PROMPTS = [[1, 2, 3, 4, 5], [7, 8], [9, 10, 11, 12, 13, 14, 15, 16, 17]]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_model("mla", seed=0, eos_token_id=90)
    path = tmp_path_factory.mktemp("ckpt")
    save_model(model, path)
    return path, model


def _vllm_engine(checkpoint, **kwargs) -> tuple[VllmEngine, FakeVllm]:
    path, model = checkpoint
    vllm = FakeVllm()
    llm = vllm.LLM(**VllmOptions(model=str(path)).engine_args())
    return VllmEngine(llm, vllm, TinyTokenizer(), model.config, dtype=torch.float32, **kwargs), vllm


def _native(model) -> Engine:
    return Engine(model, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))


def _perturbed(model, scale: float = 0.3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return {name: (t + scale * torch.randn(t.shape, generator=g)).detach()
            for name, t in served_tensors(model).items()}


def test_missing_vllm_is_a_clear_failed_precondition(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails as on a node without it
    with pytest.raises(FailedPrecondition, match=r"k2rl-inference\[vllm\]"):
        import_vllm()


def test_engine_args_and_sampling_params():
    args = VllmOptions(model="/m", tensor_parallel_size=4, extra={"enforce_eager": True}).engine_args()
    assert args["enable_sleep_mode"] and args["logprobs_mode"] == "processed_logprobs"
    assert args["worker_extension_cls"] == "k2rl.inference.vllm_worker.K2rlWorkerExtension"
    assert (args["tensor_parallel_size"], args["tokenizer"], args["enforce_eager"]) == (4, "/m", True)
    assert "max_model_len" not in args
    options = SamplingOptions(temperature=0.7, top_p=0.9, top_k=20, n=3, seed=11, max_tokens=10, min_tokens=4,
                              stop_strings=("END",), stop_token_ids=(5,), ignore_eos=True)
    params = sampling_params(FakeVllm(), options, sample_index=2, generated=3, detokenize=True)
    assert (params.n, params.seed, params.max_tokens, params.min_tokens) == (1, 13, 7, 1)
    assert (params.temperature, params.top_p, params.top_k, params.logprobs) == (0.7, 0.9, 20, 0)
    assert (params.stop, params.stop_token_ids, params.ignore_eos) == (["END"], [5], True)
    assert params.output_kind.name == "DELTA" and not params.skip_special_tokens
    unlimited = sampling_params(FakeVllm(), SamplingOptions(), 0, 0, detokenize=False)
    assert unlimited.max_tokens is None and unlimited.seed is None and unlimited.stop is None
    assert unlimited.top_k == -1
    with_eos = sampling_params(FakeVllm(), SamplingOptions(stop_token_ids=(5, 90)), 0, 0, False, (90, 91))
    assert with_eos.stop_token_ids == [5, 90, 91]  # the replica's EOS ids stop too, unless ignore_eos


def test_greedy_generation_matches_the_native_engine(checkpoint):
    engine, _ = _vllm_engine(checkpoint)
    native = _native(checkpoint[1])
    for i, prompt in enumerate(PROMPTS):
        for e in (engine, native):
            e.add_request(request(f"r{i}", prompt, temperature=0.0, max_tokens=4 + i, ignore_eos=True))
    ours, reference = run_to_completion(engine), run_to_completion(native)
    assert set(ours) == set(reference) == {(f"r{i}", 0) for i in range(3)}
    for key in ours:
        assert tokens_of(ours[key]) == tokens_of(reference[key])
        assert logprobs_of(ours[key]) == pytest.approx(logprobs_of(reference[key]), abs=1e-4)
        final = ours[key][-1]
        assert final.finish_reason is FinishReason.LENGTH and final.completion_tokens == len(tokens_of(ours[key]))


def test_sampled_logprobs_are_the_processed_distribution(checkpoint):
    engine, _ = _vllm_engine(checkpoint)
    engine.add_request(request("s", PROMPTS[0], temperature=0.8, n=2, seed=4, max_tokens=5, ignore_eos=True))
    out = run_to_completion(engine)
    model = checkpoint[1]
    for sample in (0, 1):
        tokens, logprobs = tokens_of(out[("s", sample)]), logprobs_of(out[("s", sample)])
        ids = torch.tensor([PROMPTS[0] + tokens])
        with torch.no_grad():
            expected = torch.log_softmax(model(ids)[0].float() / 0.8, -1)
        positions = range(len(PROMPTS[0]) - 1, len(PROMPTS[0]) - 1 + len(tokens))
        assert logprobs == pytest.approx([float(expected[p, t]) for p, t in zip(positions, tokens, strict=True)], abs=1e-4)
    assert tokens_of(out[("s", 0)]) != tokens_of(out[("s", 1)])  # seeds 4 and 5


def test_finish_reasons_and_abort(checkpoint):
    engine, vllm = _vllm_engine(checkpoint)
    native = _native(checkpoint[1])
    native.add_request(request("probe", PROMPTS[1], temperature=0.0, max_tokens=4, ignore_eos=True))
    third = tokens_of(run_to_completion(native)[("probe", 0)])[2]
    engine.add_request(request("stop", PROMPTS[1], temperature=0.0, max_tokens=10, stop_token_ids=[third],
                               ignore_eos=True))
    engine.add_request(request("long", PROMPTS[2], temperature=0.0, max_tokens=50, ignore_eos=True))
    updates = [u for _ in range(3) for u in engine.step()]
    partials, not_running = engine.abort(["long", "ghost"])
    updates += engine.drain_updates()
    assert not_running == ["ghost"] and not engine.has_work and not engine.has_request("long")
    assert [(p.request_id, p.completion_tokens) for p in partials] == [("long", 3)]
    assert partials[0].version_spans == [VersionSpan(0, 3, 0)]
    llm = vllm.instances[0]
    long_ids = [c[1] for c in llm.calls if c[0] == "add_request" and c[1].startswith("long#")]
    assert ("abort_request", long_ids) in llm.calls
    assert [u.finish_reason for u in updates if u.request_id == "long"][-1] is FinishReason.ABORT
    stopped = [u for u in updates if u.request_id == "stop"]
    assert tokens_of(stopped)[-1] == third and len(tokens_of(stopped)) <= 3
    assert stopped[-1].finish_reason is FinishReason.STOP and stopped[-1].matched_stop_token_id == third
    # vLLM finish_reason / stop_reason mapping
    assert finish_of(SimpleNamespace(finish_reason="stop", stop_reason="END"), 3).stop_string == "END"
    assert finish_of(SimpleNamespace(finish_reason="stop", stop_reason=None), 90).stop_token_id == 90
    assert finish_of(SimpleNamespace(finish_reason="abort", stop_reason=None), 1).reason is FinishReason.ABORT
    assert finish_of(SimpleNamespace(finish_reason=None, stop_reason=None), 1) is None
    with pytest.raises(ValueError, match="unknown"):
        finish_of(SimpleNamespace(finish_reason="timeout", stop_reason=None), 1)


def test_sleep_levels_and_weight_update_after_level_2(checkpoint):
    engine, vllm = _vllm_engine(checkpoint, weight_version=3)
    llm = vllm.instances[0]
    engine.sleep(1)
    assert engine.sleep_state is SleepState.LEVEL_1 and llm.sleep_level == 1 and engine.weight_version == 3
    with pytest.raises(FailedPrecondition, match="asleep"):
        engine.add_request(request("x", PROMPTS[0], max_tokens=2))
    engine.wake_up()
    assert engine.sleep_state is SleepState.AWAKE and ("wake_up", ("weights", "kv_cache")) in llm.calls
    engine.sleep(2)
    assert (engine.sleep_state, engine.has_weights, engine.weight_version) == (SleepState.LEVEL_2, False, 0)
    new = _perturbed(checkpoint[1])
    assert engine.apply_weights(4, new) is WeightUpdateOutcome.APPLIED
    assert engine.sleep_state is SleepState.WEIGHTS_ONLY and llm.calls[-3] == ("wake_up", ("weights",))
    assert llm.calls[-2:] == [("collective_rpc", "k2rl_load_weights"), ("reset_prefix_cache",)]
    with pytest.raises(FailedPrecondition, match="asleep"):
        engine.add_request(request("x", PROMPTS[0], max_tokens=2))
    engine.wake_up([MemoryPool.KV_CACHE])
    assert engine.sleep_state is SleepState.AWAKE and engine.weight_version == 4
    # Generation now runs on the new weights: equal to a native engine loaded with them.
    reference_model = tiny_model("mla", seed=0, eos_token_id=90)
    reference_model.load_state_dict(new, strict=False)
    native = _native(reference_model)
    for e in (engine, native):
        e.add_request(request("after", PROMPTS[2], temperature=0.0, max_tokens=6, ignore_eos=True))
    assert tokens_of(run_to_completion(engine)[("after", 0)]) == tokens_of(run_to_completion(native)[("after", 0)])


def test_bucketed_update_and_in_flight_policies(checkpoint):
    engine, vllm = _vllm_engine(checkpoint, weight_version=1)
    llm = vllm.instances[0]
    new = _perturbed(checkpoint[1])
    stager = engine.begin_weight_update(2)
    for name, tensor in new.items():  # as a receiver would: big tensors in two flat pieces
        flat = tensor.reshape(-1)
        half = flat.numel() // 2
        stager.load(name, flat[:half], 0)
        stager.load(name, flat[half:], half)
    assert stager.complete
    engine.add_request(request("busy", PROMPTS[0], temperature=0.0, max_tokens=8, ignore_eos=True))
    engine.step()
    assert engine.commit_weights(stager, InFlightPolicy.REFUSE) is WeightUpdateOutcome.BUSY
    engine.step()
    assert engine.commit_weights(stager, InFlightPolicy.PAUSE) is WeightUpdateOutcome.APPLIED
    assert engine.weight_version == 2 and engine.has_request("busy")
    for name, tensor in new.items():
        assert torch.equal(served_tensors(llm.model)[name], tensor), name
    out = run_to_completion(engine)[("busy", 0)]
    tokens = [t for u in out for t in u.token_ids]
    assert len(tokens) == 6 and out[-1].finish_reason is FinishReason.LENGTH
    assert [u.weight_version for u in out if u.token_ids] == [2] * 6
    resubmitted = [c[1] for c in llm.calls if c[0] == "add_request"]
    assert len(resubmitted) == 2  # original + the PAUSE resubmission from prompt + 2 outputs
    # ABORT policy: running requests end first, then the update applies.
    engine.add_request(request("gone", PROMPTS[1], temperature=0.0, max_tokens=8, ignore_eos=True))
    engine.step()
    assert engine.apply_weights(3, new, InFlightPolicy.ABORT) is WeightUpdateOutcome.APPLIED
    final = engine.drain_updates()[-1]
    assert final.finish_reason is FinishReason.ABORT and not engine.has_work
    assert engine.apply_weights(3, new) is WeightUpdateOutcome.ALREADY_CURRENT
    assert engine.apply_weights(2, new) is WeightUpdateOutcome.STALE_VERSION


def test_service_serves_the_vllm_backend_over_grpc(tmp_path, monkeypatch):
    save_model(tiny_model("gqa", seed=1, eos_token_id=90, vocab_size=512), tmp_path)
    vllm = FakeVllm()
    monkeypatch.setattr(service_module, "import_vllm", lambda: vllm)
    with serve_in_process(SERVICE, backend="vllm", model=str(tmp_path), tokenizer="k2-nano", http_port=-1,
                          tensor_parallel_size=2) as runtime:
        stub = create_stub(inference_pb2_grpc.InferenceServiceStub, runtime.settings.address, ClientOptions())
        try:
            info = stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=30)
            assert info.backend == inference_pb2.INFERENCE_BACKEND_VLLM and info.tensor_parallel_size == 2
            assert info.architecture == "Qwen3ForCausalLM"
            chunks = list(stub.Generate(inference_pb2.GenerateRequest(
                request_id="g", prompt_token_ids=inference_pb2.TokenIds(ids=[5, 6, 7]),
                sampling_params=common_pb2.SamplingParams(max_tokens=4, ignore_eos=True, n=2, seed=1)), timeout=60))
            assert sorted(len([t for c in chunks if c.sample_index == i for t in c.token_ids]) for i in (0, 1)) == [4, 4]
            assert {c.finish_reason for c in chunks if c.finish_reason} == {common_pb2.FINISH_REASON_LENGTH}
            stub.Sleep(inference_pb2.SleepRequest(level=inference_pb2.SLEEP_LEVEL_2), timeout=30)
            with pytest.raises(grpc.RpcError) as error:
                list(stub.Generate(inference_pb2.GenerateRequest(
                    prompt_token_ids=inference_pb2.TokenIds(ids=[5]),
                    sampling_params=common_pb2.SamplingParams(max_tokens=1)), timeout=30))
            assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        finally:
            close_stub(stub)
    args = vllm.instances[0].engine_args
    assert (args["model"], args["tensor_parallel_size"], args["tokenizer"]) == (str(tmp_path), 2, "k2-nano")


def test_a_refused_sample_withdraws_the_whole_request(checkpoint, monkeypatch):
    engine, vllm = _vllm_engine(checkpoint)
    llm = vllm.instances[0]
    accept = llm.add_request
    calls = iter([accept, ValueError("prompt longer than max_model_len")])

    def add_request(*args):
        step = next(calls)
        if isinstance(step, Exception):
            raise step
        return step(*args)

    monkeypatch.setattr(llm, "add_request", add_request)
    with pytest.raises(InvalidArgument, match="max_model_len"):
        engine.add_request(request("r", PROMPTS[0], n=2, max_tokens=3))
    assert not engine.has_work and not engine.has_request("r") and not llm.requests
    assert llm.calls[-1][0] == "abort_request"
