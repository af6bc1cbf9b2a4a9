"""PublishWeights end to end, every piece a real process on loopback: the checkpoint-engine
coordinator (`k2rl serve checkpoint_engine`), one engine worker, `k2rl serve trainer --nproc 2`
(both ranks stage a share of the weights), the inference service registered as a replica, and
the checkpoint engine's reference replica (it dumps what it received, so bytes can be compared
with the trainer's own HF checkpoint)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
import pytest
import torch
import yaml
from safetensors import safe_open

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.common.v1 import common_pb2
from k2rl.core.errors import InvalidArgument
from k2rl.core.testing import free_loopback_port, serve_in_process
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.publish import checksum_algorithm
from k2rl.trainer.service import SERVICE as TRAINER
from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from k2rl.weights import ChecksumAlgorithm

K2RL = [sys.executable, "-m", "k2rl.core.cli"]
BUCKET = 4 << 20  # k2-nano is ~25 MB: several buckets per rank
PROMPT = [256, 49, 50, 43, 55, 61]  # "<bos>12+7="


@contextmanager
def _process(command: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:  # noqa: ANN003
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=kwargs.pop("stdout", out), stderr=out, **kwargs)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _serve(stack: ExitStack, tmp: Path, service: str, settings: dict) -> str:
    port = free_loopback_port()
    config = tmp / f"{service}.yaml"
    config.write_text(yaml.safe_dump({service: {"port": port, "metrics_port": free_loopback_port(),
                                                "grace_period_s": 0.5, **settings}}))
    process = stack.enter_context(_process([*K2RL, "serve", service, "--config", str(config)], tmp / f"{service}.log"))
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    channel = grpc.insecure_channel(address)
    while True:
        assert process.poll() is None, (tmp / f"{service}.log").read_text()[-3000:]
        try:
            grpc.channel_ready_future(channel).result(timeout=1)
            break
        except grpc.FutureTimeoutError:
            assert time.monotonic() < deadline, f"{service} did not start"
    channel.close()
    return address


def _held(path: Path) -> tuple[int, dict[str, torch.Tensor]]:
    with safe_open(str(path), framework="pt") as f:
        return int(f.metadata()["version"]), {k: f.get_tensor(k) for k in f.keys()}


def _lm_step(trainer: trainer_pb2_grpc.TrainerServiceStub) -> None:
    config = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN)
    sequences = [trainer_pb2.TokenSequence(token_ids=[256, *(48 + (i * 7 + j) % 10 for j in range(12)), 257],
                                           sequence_id=f"s{i}") for i in range(4)]
    trainer.TrainStep(iter([trainer_pb2.TrainStepRequest(config=config, sequences=sequences)]), timeout=120)


def _greedy(replica: inference_pb2_grpc.InferenceServiceStub) -> tuple[list[int], set[int]]:
    request = inference_pb2.GenerateRequest(
        request_id=f"g{time.monotonic_ns()}", prompt_token_ids=inference_pb2.TokenIds(ids=PROMPT),
        sampling_params=common_pb2.SamplingParams(temperature=0.0, max_tokens=6, ignore_eos=True))
    chunks = list(replica.Generate(request, timeout=60))
    return [t for c in chunks for t in c.token_ids], {c.weight_version for c in chunks}


def test_publish_weights_reaches_the_inference_service_and_a_replica_bit_identical(tmp_path: Path) -> None:
    with ExitStack() as stack:
        coordinator = _serve(stack, tmp_path, "checkpoint_engine", {
            "state_url": f"sqlite:///{tmp_path}/ce.db", "bucket_bytes": BUCKET, "lease_ttl_ms": 3000})
        worker = stack.enter_context(_process(
            [sys.executable, "-m", "k2rl.checkpoint_engine.worker", "--coordinator", coordinator, "--rank", "0",
             "--world-size", "1", "--master-port", str(free_loopback_port()), "--bucket-bytes", str(BUCKET)],
            tmp_path / "worker.log", stdout=subprocess.PIPE, text=True))
        assert worker.stdout.readline().startswith("ready"), (tmp_path / "worker.log").read_text()
        dependencies = {"checkpoint_engine": coordinator}
        trainer_address = _serve(stack, tmp_path, "trainer", {
            "nproc": 2, "model": "k2-nano", "device": "cpu", "publish_bucket_bytes": BUCKET,
            "checkpoint_dir": str(tmp_path / "ckpt"), "dependencies": dependencies,
            "training": {"lr": 1e-2, "micro_batch_tokens": 256}})
        inference_address = _serve(stack, tmp_path, "inference", {
            "model": "k2-nano", "http_port": -1, "num_kv_blocks": 64, "checkpoint_engine_replica": True,
            "replica_name": "test/inference-0", "dependencies": dependencies})
        reference = stack.enter_context(_process(
            [sys.executable, "-m", "k2rl.checkpoint_engine.reference_replica", "--coordinator", coordinator,
             "--name", "ref", "--out", str(tmp_path)], tmp_path / "reference.log", stdout=subprocess.PIPE, text=True))
        assert reference.stdout.readline().strip(), (tmp_path / "reference.log").read_text()

        engine = checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub(stack.enter_context(grpc.insecure_channel(coordinator)))
        trainer = trainer_pb2_grpc.TrainerServiceStub(stack.enter_context(grpc.insecure_channel(trainer_address)))
        replica = inference_pb2_grpc.InferenceServiceStub(stack.enter_context(grpc.insecure_channel(inference_address)))
        deadline = time.monotonic() + 60
        while sum(r.live for r in engine.GetVersion(ce.GetVersionRequest(), timeout=5).replicas) < 2:
            assert time.monotonic() < deadline, "the inference service did not register as a replica"
            time.sleep(0.2)
        before, _ = _greedy(replica)

        versions = []
        for step in (1, 2):
            _lm_step(trainer)
            trainer.Offload(trainer_pb2.OffloadRequest(), timeout=60)  # published from the host copies
            published = trainer.PublishWeights(trainer_pb2.PublishWeightsRequest(), timeout=120)
            assert published.version.trainer_step == step and published.bucket_count >= 4
            final = list(engine.WaitForVersion(ce.WaitForVersionRequest(min_version=published.version.version),
                                               timeout=120))[-1]
            assert final.phase == ce.VERSION_PHASE_COMPLETE and (final.replicas_ready, final.replicas_total) == (2, 2)
            versions.append(published.version.version)
            state = trainer.GetState(trainer_pb2.GetStateRequest(), timeout=10)
            assert state.published_version.version == versions[-1] and state.step == step
            trainer.Onload(trainer_pb2.OnloadRequest(), timeout=60)
        assert versions == [1, 2]

        # bit-identical to what the trainer itself writes as its HF checkpoint
        saved = trainer.SaveCheckpoint(trainer_pb2.SaveCheckpointRequest(
            directory=str(tmp_path / "hf"), format=common_pb2.CHECKPOINT_FORMAT_HF_SAFETENSORS), timeout=60)
        held_version, held = _held(tmp_path / "ref.safetensors")
        expected = {}
        for file in Path(saved.path).glob("*.safetensors"):
            with safe_open(str(file), framework="pt") as f:
                expected.update({k: f.get_tensor(k) for k in f.keys()})
        assert held_version == 2 and held.keys() == expected.keys()
        for name, tensor in expected.items():
            assert held[name].dtype == tensor.dtype and torch.equal(held[name], tensor), name

        info = replica.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=10)
        assert info.weight_version.version == 2
        after, produced_by = _greedy(replica)
        assert produced_by == {2} and after != before


def test_a_second_publish_waits_for_the_engine_to_gather_the_first(tmp_path: Path) -> None:
    """No engine worker ever gathers version 1, so its staging buffers must stay untouched:
    the next PublishWeights waits (bounded) and then fails with UNAVAILABLE."""
    with ExitStack() as stack:
        coordinator = _serve(stack, tmp_path, "checkpoint_engine", {"state_url": f"sqlite:///{tmp_path}/ce.db",
                                                                    "bucket_bytes": BUCKET})
        trainer_rt = stack.enter_context(serve_in_process(
            TRAINER, model="k2-nano", device="cpu", publish_bucket_bytes=BUCKET, publish_gather_timeout_s=1.5,
            dependencies={"checkpoint_engine": coordinator}, training=TrainingConfig(micro_batch_tokens=256)))
        channel = stack.enter_context(grpc.insecure_channel(trainer_rt.settings.address))
        trainer = trainer_pb2_grpc.TrainerServiceStub(channel)
        first = trainer.PublishWeights(trainer_pb2.PublishWeightsRequest(
            checksum_algorithm=common_pb2.CHECKSUM_ALGORITHM_SUM64), timeout=60)
        assert first.version.version == 1 and first.version.trainer_step == 0
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as error:
            trainer.PublishWeights(trainer_pb2.PublishWeightsRequest(), timeout=60)
        assert error.value.code() is grpc.StatusCode.UNAVAILABLE
        assert "still being gathered" in error.value.details() and time.monotonic() - started >= 1.4
        with grpc.insecure_channel(coordinator) as ce_channel:
            plan = checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub(ce_channel).GetVersionPlan(
                ce.GetVersionPlanRequest(version=1), timeout=10)
        assert plan.phase == ce.VERSION_PHASE_GATHERING and len(plan.buckets) == first.bucket_count
        assert {b.bucket.checksum.algorithm for b in plan.buckets} == {common_pb2.CHECKSUM_ALGORITHM_SUM64}


def test_checksum_defaults_hash_host_buckets_with_xxh3_and_device_buckets_with_sum64() -> None:
    assert checksum_algorithm(common_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED, "cpu") is ChecksumAlgorithm.XXH3_64
    assert checksum_algorithm(common_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED, "cuda") is ChecksumAlgorithm.SUM64
    assert checksum_algorithm(common_pb2.CHECKSUM_ALGORITHM_CRC32, "cpu") is ChecksumAlgorithm.CRC32
    with pytest.raises(InvalidArgument, match="unknown checksum algorithm"):
        checksum_algorithm(99, "cpu")
