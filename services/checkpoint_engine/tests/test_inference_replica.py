"""The real inference service in the weight path, every piece a real process on loopback:
coordinator + trainer (2 ranks, this process) + 2 engine workers + `k2rl serve inference`
(k2-nano, native engine) registered as an INFERENCE_REPLICA.

The inference service is driven only through its gRPC contract and CLI (services never import
one another). "A fresh engine loaded from the same weights" is a second, standalone inference
process started from a k2-nano checkpoint saved with the trainer's tensors.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import torch
import yaml

from k2rl.checkpoint_engine.local import Cluster, cluster
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.common.v1 import common_pb2
from k2rl.core.testing import free_loopback_port
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.models import build_model, get_preset, save_model

PROMPTS = ([5, 17, 3, 42, 8, 100, 7], [9, 1, 60, 2], [33, 12, 7, 7, 70, 4, 1, 250, 31])
MAX_TOKENS = 8
REPLICA = "it/inference-0"


def _trainer_params(seed: int) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
    """A k2-nano "after training" (its own init seed), its tensors split over 2 trainer ranks."""
    model = build_model(get_preset("k2-nano"), seed=seed)
    ranks: list[dict[str, torch.Tensor]] = [{}, {}]
    for i, (name, tensor) in enumerate(model.state_dict().items()):
        ranks[i % 2][name] = tensor.detach().clone()
    return model, ranks


@contextmanager
def _inference(tmp: Path, name: str, *, coordinator: str | None = None, model: str = "k2-nano") -> Iterator[subprocess.Popen]:
    """`k2rl serve inference` with a small KV cache, no HTTP API; yields once it is SERVING."""
    port = free_loopback_port()
    config = {"inference": {
        "port": port, "metrics_port": free_loopback_port(), "http_port": -1, "model": model, "tokenizer": "k2-nano", "seed": 0,
        "num_kv_blocks": 64, "log_level": "WARNING", "grace_period_s": 0.5,
        **({"checkpoint_engine_replica": True, "replica_name": REPLICA,
            "dependencies": {"checkpoint_engine": coordinator}} if coordinator else {})}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    process = subprocess.Popen([sys.executable, "-m", "k2rl.core.cli", "serve", "inference", "--config", str(path)],
                               stdout=subprocess.DEVNULL)
    process.address = f"127.0.0.1:{port}"  # type: ignore[attr-defined]
    try:
        channel = grpc.insecure_channel(process.address)  # type: ignore[attr-defined]
        grpc.channel_ready_future(channel).result(timeout=60)
        channel.close()
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def _stub(address: str) -> inference_pb2_grpc.InferenceServiceStub:
    return inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(address))


def _greedy(stub: inference_pb2_grpc.InferenceServiceStub) -> tuple[list[list[int]], set[int]]:
    """Greedy completions of PROMPTS and the weight versions that produced them."""
    outputs, versions = [], set()
    for i, prompt in enumerate(PROMPTS):
        request = inference_pb2.GenerateRequest(
            request_id=f"greedy-{i}-{time.monotonic_ns()}", prompt_token_ids=inference_pb2.TokenIds(ids=prompt),
            sampling_params=common_pb2.SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS, ignore_eos=True))
        chunks = list(stub.Generate(request, timeout=60))
        outputs.append([t for c in chunks for t in c.token_ids])
        versions |= {c.weight_version for c in chunks if c.weight_version}
    return outputs, versions


def _served_version(stub: inference_pb2_grpc.InferenceServiceStub) -> int:
    return stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=10).weight_version.version


def _replica_status(c: Cluster) -> list[ce.ReplicaVersion]:
    return [r for r in c.stub.GetVersion(ce.GetVersionRequest(), timeout=5).replicas if r.instance_name == REPLICA]


def _wait_registered(c: Cluster, weight_version: int, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any(r.live and r.weight_version == weight_version for r in _replica_status(c)):
            return
        time.sleep(0.1)
    raise AssertionError(f"{REPLICA} did not register with version {weight_version}: {_replica_status(c)}")


def test_the_inference_service_takes_versions_from_the_engine_and_catches_up_after_kill_9(tmp_path: Path) -> None:
    trained, params = _trainer_params(seed=7)
    save_model(trained, tmp_path / "trained")
    with (
        cluster(tmp_path, bucket_bytes=1 << 20, lease_ttl_ms=3000) as c,
        _inference(tmp_path, "replica", coordinator=c.address) as replica,
        _inference(tmp_path, "fresh", model=str(tmp_path / "trained")) as fresh,
    ):
        stub = _stub(replica.address)  # type: ignore[attr-defined]
        _wait_registered(c, weight_version=0)
        before, _ = _greedy(stub)
        expected, _ = _greedy(_stub(fresh.address))  # type: ignore[attr-defined]
        assert before != expected, "the replica's init weights must differ from the trainer's for this test to mean anything"

        version = c.publish(params, step=1)
        final = c.wait(version)
        assert final.phase == ce.VERSION_PHASE_COMPLETE, final
        assert (final.replicas_ready, final.replicas_total) == (1, 1)
        assert _served_version(stub) == version
        after, versions = _greedy(stub)
        assert after == expected and versions == {version}
        (status,) = _replica_status(c)
        assert status.last_outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED

        # kill -9; the trainer moves on (its staging buffers no longer hold the version) and
        # publishes nothing: the restarted replica gets the version from the engine alone.
        replica.send_signal(signal.SIGKILL)
        replica.wait(timeout=10)
        for stager in c.stagers:
            stager.staging.zero_()
        with _inference(tmp_path, "restarted", coordinator=c.address) as restarted:
            stub = _stub(restarted.address)  # type: ignore[attr-defined]
            deadline = time.monotonic() + 30
            while _served_version(stub) != version and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _served_version(stub) == version
            assert _greedy(stub) == (expected, {version})
            final = c.wait(version)
            assert final.phase == ce.VERSION_PHASE_COMPLETE and final.replicas_ready == 1
