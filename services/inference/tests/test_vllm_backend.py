"""The vLLM backend against ``FakeVllm``, the declared double of the vLLM API it uses (real vLLM
needs a GPU and is not installed here): sampling-parameter translation, outputs, logprobs
and finish reasons, abort, sleep levels, the service selecting it with ``backend: vllm``,
and weight updates: the worker extension opening the IPC buffers a checkpoint-engine-style
writer published (shm slots reused per bucket, a whole version in another process's shm,
CUDA IPC where a GPU is present), with only metadata through ``collective_rpc``,
all-or-nothing on checksum failures, and the in-flight policies."""

from __future__ import annotations

import contextlib
import queue
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
    RingPublisher,
    TinyTokenizer,
    logprobs_of,
    publish_in_child,
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
from k2rl.weights import BucketLayout, ChecksumMismatch, LayoutError, TensorPiece, TensorSpec
from k2rl.weights import proto as wire
from k2rl.weights import shm as shm_module

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
    assert engine.sleep_state is SleepState.WEIGHTS_ONLY
    after_wake = llm.calls[llm.calls.index(("wake_up", ("weights",))) + 1:]
    assert [call[-1] for call in after_wake] == [  # one bucket: the tiny model is far below 64 MiB
        "k2rl_update_begin", "k2rl_update_bucket", "k2rl_update_prepare", "k2rl_update_apply",
        "reset_prefix_cache", "k2rl_update_abort"]
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


def _transfer(engine: VllmEngine, publisher: RingPublisher, version: int, corrupt_bucket: int | None = None):
    """Receive ``version`` from the publisher's slots in the workers, as an UpdateWeights
    stream does (each bucket placed once the previous one in its slot was loaded)."""
    update = engine.begin_weight_update(version)
    receiver = update.receiver(lambda run: run(engine))
    buckets = publisher.buckets
    receiver.begin(version, len(buckets), publisher.slots)
    for bucket in buckets:
        receiver.load_bucket(bucket, publisher.place(bucket.index, corrupt=bucket.index == corrupt_bucket))
    receiver.commit(version, len(buckets))
    return update, receiver


def _served(llm) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in served_tensors(llm.model).items()}


def test_workers_load_from_ipc_slots_under_each_in_flight_policy(checkpoint):
    engine, vllm = _vllm_engine(checkpoint, weight_version=1)
    llm = vllm.instances[0]
    old, new = _served(llm), _perturbed(checkpoint[1])
    publisher = RingPublisher(new, bucket_bytes=1 << 14)
    try:
        assert len(publisher.buckets) > 2  # slots are reused within the version
        engine.add_request(request("busy", PROMPTS[0], temperature=0.0, max_tokens=8, ignore_eos=True))
        engine.step()
        update, receiver = _transfer(engine, publisher, 2)
        assert all(torch.equal(t, old[n]) for n, t in served_tensors(llm.model).items())  # untouched until apply
        assert engine.commit_weights(update, InFlightPolicy.REFUSE) is WeightUpdateOutcome.BUSY
        assert llm.worker._k2rl_update is None and engine.weight_version == 1  # the workers dropped it
        engine.step()
        update, receiver = _transfer(engine, publisher, 2)
        assert engine.commit_weights(update, InFlightPolicy.PAUSE) is WeightUpdateOutcome.APPLIED
        receiver.close()
    finally:
        publisher.close()
    assert engine.weight_version == 2 and engine.has_request("busy")
    for name, tensor in new.items():
        assert torch.equal(served_tensors(llm.model)[name], tensor), name
    out = run_to_completion(engine)[("busy", 0)]
    assert len(tokens_of(out)) == 6 and out[-1].finish_reason is FinishReason.LENGTH
    assert [u.weight_version for u in out if u.token_ids] == [2] * 6
    assert len([c for c in llm.calls if c[0] == "add_request"]) == 2  # original + the PAUSE resubmission
    # ABORT policy (apply_weights publishes in shm itself): running requests end first.
    engine.add_request(request("gone", PROMPTS[1], temperature=0.0, max_tokens=8, ignore_eos=True))
    engine.step()
    assert engine.apply_weights(3, new, InFlightPolicy.ABORT) is WeightUpdateOutcome.APPLIED
    assert engine.drain_updates()[-1].finish_reason is FinishReason.ABORT and not engine.has_work
    assert engine.apply_weights(3, new) is WeightUpdateOutcome.ALREADY_CURRENT
    assert engine.apply_weights(2, new) is WeightUpdateOutcome.STALE_VERSION


@contextlib.contextmanager
def _child_publisher(params: dict[str, torch.Tensor], on_cuda: bool = False):
    """A writer process publishing ``params``; yields ``(buckets, offsets, descriptor, conn)``."""
    context = torch.multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    writer = context.Process(target=publish_in_child, args=(params, 1 << 14, on_cuda, theirs), daemon=True)
    writer.start()
    try:
        if not ours.poll(120):
            raise TimeoutError("the writer process published nothing within 120 s")
        yield (*ours.recv(), ours)
    finally:
        ours.send(("done",))
        writer.join(timeout=60)
        if writer.is_alive():
            writer.kill()


def _transfer_from_one_buffer(engine: VllmEngine, version: int, buckets, offsets, descriptor):
    """The UpdateWeights steps of a version that sits whole in one buffer (slot 0)."""
    update = engine.begin_weight_update(version)
    receiver = update.receiver(lambda run: run(engine))
    try:
        receiver.begin(version, len(buckets), {0: descriptor})
        for bucket, offset in zip(buckets, offsets, strict=True):
            receiver.load_bucket(bucket, 0, offset)
        receiver.commit(version, len(buckets))
        return engine.commit_weights(update)
    finally:
        receiver.close()


def _greedy_tokens(engine, request_id: str) -> list[int]:
    engine.add_request(request(request_id, PROMPTS[2], temperature=0.0, max_tokens=5, ignore_eos=True))
    return tokens_of(run_to_completion(engine)[(request_id, 0)])


@pytest.mark.slow  # spawns a Python interpreter that imports torch
def test_workers_open_buckets_another_process_published(checkpoint):
    engine, vllm = _vllm_engine(checkpoint, weight_version=1)
    llm = vllm.instances[0]
    old, new = _served(llm), _perturbed(checkpoint[1])
    with _child_publisher(new) as (buckets, offsets, descriptor, writer):
        assert descriptor.shm_name.removeprefix("/") not in shm_module._OPEN  # the worker maps it itself
        last = len(buckets) - 1
        writer.send(("flip", last))
        assert writer.recv() == "ok"
        with pytest.raises(ChecksumMismatch, match=f"vLLM worker: bucket {last}"):
            _transfer_from_one_buffer(engine, 2, buckets, offsets, descriptor)
        assert engine.weight_version == 1 and engine.has_weights and llm.worker._k2rl_update is None
        assert all(torch.equal(t, old[n]) for n, t in served_tensors(llm.model).items())
        assert _greedy_tokens(engine, "old") == _greedy_tokens(_native(checkpoint[1]), "old")
        writer.send(("flip", last))  # undo
        assert writer.recv() == "ok"
        assert _transfer_from_one_buffer(engine, 2, buckets, offsets, descriptor) is WeightUpdateOutcome.APPLIED
    assert engine.weight_version == 2
    reference = tiny_model("mla", seed=0, eos_token_id=90)
    reference.load_state_dict(new, strict=False)
    assert _greedy_tokens(engine, "new") == _greedy_tokens(_native(reference), "new")


def test_a_load_weights_failure_part_way_stops_serving(checkpoint, monkeypatch):
    engine, vllm = _vllm_engine(checkpoint, weight_version=1)
    model = vllm.instances[0].worker.model_runner.model
    loader = model.load_weights

    def fail_half_way(weights):
        items = list(weights)
        loader(items[: len(items) // 2])
        raise RuntimeError("out of memory")

    monkeypatch.setattr(model, "load_weights", fail_half_way)
    assert engine.apply_weights(2, _perturbed(checkpoint[1])) is WeightUpdateOutcome.TRANSFER_FAILED
    assert (engine.has_weights, engine.weight_version) == (False, 0)
    with pytest.raises(FailedPrecondition):
        engine.add_request(request("x", PROMPTS[0], max_tokens=2))


def test_collective_rpc_carries_metadata_only(checkpoint):
    engine, vllm = _vllm_engine(checkpoint)
    llm = vllm.instances[0]
    with pytest.raises(TypeError, match="Tensor is not plain metadata"):
        llm.collective_rpc("k2rl_update_abort", args=(torch.zeros(1),))
    update = engine.begin_weight_update(5)
    receiver = update.receiver(lambda run: run(engine))
    bucket = BucketLayout(0, 16, (TensorPiece(TensorSpec("x", (4,), torch.float32), 0, 16),))
    with pytest.raises(LayoutError, match="is not in progress"):  # a bucket before begin
        receiver.load_bucket(bucket, 0)
    wrong = next(iter(served_tensors(checkpoint[1])))
    bad = RingPublisher({wrong: torch.zeros(3, 3)})
    try:
        with pytest.raises(LayoutError, match=r"shape \(3, 3\)"):
            receiver.load_bucket(bad.buckets[0], 0)
    finally:
        bad.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA IPC needs a GPU (not exercised on CPU CI)")
def test_workers_load_from_a_cuda_ipc_buffer(checkpoint):
    engine, vllm = _vllm_engine(checkpoint, weight_version=1)
    new = _perturbed(checkpoint[1])
    with _child_publisher(new, on_cuda=True) as (buckets, offsets, descriptor, _):
        assert _transfer_from_one_buffer(engine, 2, buckets, offsets, descriptor) is WeightUpdateOutcome.APPLIED
    served = served_tensors(vllm.instances[0].model)
    assert all(torch.equal(served[name], tensor) for name, tensor in new.items())


def _update_stream(publisher: RingPublisher, version: int, acked: queue.Queue, corrupt_bucket: int | None = None):
    """The requests of an UpdateWeights stream over the publisher's two slots."""
    buckets = publisher.buckets
    yield inference_pb2.UpdateWeightsRequest(begin=inference_pb2.UpdateWeightsBegin(
        version=common_pb2.WeightVersion(version=version), bucket_count=len(buckets),
        slots=[inference_pb2.IpcSlot(slot=i, handle=wire.descriptor_to_proto(d)) for i, d in publisher.slots.items()]))
    for bucket in buckets:
        if bucket.index >= 2:
            try:
                acked.get(timeout=30)  # the slot is free once the bucket before in it was loaded
            except queue.Empty:
                return
        slot = publisher.place(bucket.index, corrupt=bucket.index == corrupt_bucket)
        yield inference_pb2.UpdateWeightsRequest(
            bucket=inference_pb2.UpdateWeightsBucket(bucket=wire.bucket_to_proto(bucket), slot=slot))
    yield inference_pb2.UpdateWeightsRequest(
        commit=inference_pb2.UpdateWeightsCommit(version=version, bucket_count=len(buckets)))


def _update_over_grpc(stub, publisher: RingPublisher, version: int, corrupt_bucket: int | None = None):
    acked: queue.Queue[int] = queue.Queue()
    responses = []
    for response in stub.UpdateWeights(_update_stream(publisher, version, acked, corrupt_bucket), timeout=60):
        responses.append(response)
        if response.WhichOneof("event") == "bucket_loaded":
            acked.put(response.bucket_loaded.slot)
    return responses[-1].result


def _greedy_over_grpc(stub, prompt: list[int]) -> tuple[list[int], set[int]]:
    chunks = list(stub.Generate(inference_pb2.GenerateRequest(
        request_id="q", prompt_token_ids=inference_pb2.TokenIds(ids=prompt),
        sampling_params=common_pb2.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True)), timeout=60))
    return [t for c in chunks for t in c.token_ids], {c.weight_version for c in chunks}


def test_update_weights_rpc_reaches_the_vllm_workers_through_shm(tmp_path, monkeypatch):
    served = tiny_model("gqa", seed=1, eos_token_id=90, vocab_size=512)
    save_model(served, tmp_path)
    new = _perturbed(served)
    reference = tiny_model("gqa", seed=1, eos_token_id=90, vocab_size=512)
    reference.load_state_dict(new, strict=False)
    prompt = [5, 17, 3, 42, 8]
    native = Engine(reference, TinyTokenizer(), EngineConfig(block_size=4, num_kv_blocks=64))
    native.add_request(request("q", prompt, temperature=0.0, max_tokens=6, ignore_eos=True))
    expected = tokens_of(run_to_completion(native)[("q", 0)])
    vllm = FakeVllm()
    monkeypatch.setattr(service_module, "import_vllm", lambda: vllm)
    publisher = RingPublisher(new, bucket_bytes=1 << 14)
    with serve_in_process(SERVICE, backend="vllm", model=str(tmp_path), tokenizer="k2-nano", http_port=-1,
                          initial_weight_version=3) as runtime:
        stub = create_stub(inference_pb2_grpc.InferenceServiceStub, runtime.settings.address, ClientOptions())
        try:
            before = _greedy_over_grpc(stub, prompt)
            assert before[1] == {3} and before[0] != expected
            result = _update_over_grpc(stub, publisher, 7, corrupt_bucket=len(publisher.buckets) - 1)
            assert result.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH
            assert result.current_version.version == 3 and _greedy_over_grpc(stub, prompt) == before
            result = _update_over_grpc(stub, publisher, 7)
            assert result.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED and result.current_version.version == 7
            assert _greedy_over_grpc(stub, prompt) == (expected, {7})
        finally:
            close_stub(stub)
            publisher.close()
    rpcs = [call[1] for call in vllm.instances[0].calls if call[0] == "collective_rpc"]
    assert rpcs.count("k2rl_update_bucket") == 2 * len(publisher.buckets)
    assert rpcs.count("k2rl_update_apply") == 1


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
