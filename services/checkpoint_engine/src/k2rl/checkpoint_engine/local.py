"""A whole checkpoint-engine deployment on loopback, for tests and bench/weight_update.py:
the coordinator in this process, a 2-rank trainer played by this process (two staging
buffers, two TRAINER_RANK registrations), engine workers and reference replicas as real
processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import torch
from safetensors import safe_open

from k2rl.checkpoint_engine.service import SERVICE
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.core.testing import free_loopback_port, serve_in_process
from k2rl.weights import ChecksumAlgorithm, Selector, StagedVersion, WeightStager
from k2rl.weights import proto as wire


@dataclass
class Cluster:
    address: str
    metrics_url: str
    stub: checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub
    out: Path
    bucket_bytes: int
    workers: list[subprocess.Popen] = field(default_factory=list)
    replicas: dict[str, subprocess.Popen] = field(default_factory=dict)
    replica_ids: dict[str, str] = field(default_factory=dict)
    trainer_ids: list[str] = field(default_factory=list)
    stagers: list[WeightStager] = field(default_factory=list)
    selectors: dict[str, list[Selector]] = field(default_factory=dict)

    def start_replica(self, name: str, selectors: list[Selector] = (), dump: bool = True) -> str:
        self.selectors[name] = list(selectors)
        spec = json.dumps([s.__dict__ for s in selectors])
        process = subprocess.Popen([sys.executable, "-m", "k2rl.checkpoint_engine.reference_replica", "--coordinator", self.address, "--name", name,
                                    "--out", str(self.out), "--selectors", spec, *([] if dump else ["--no-dump"])],
                                   stdout=subprocess.PIPE, text=True)
        self.replicas[name] = process
        self.replica_ids[name] = process.stdout.readline().strip()
        assert self.replica_ids[name], f"replica {name} did not start"
        return self.replica_ids[name]

    def kill_replica(self, name: str) -> None:
        process = self.replicas.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)

    def publish(self, params: list[dict[str, torch.Tensor]], step: int, corrupt_bucket: int | None = None) -> int:
        """Trainer ranks stage their parameters; rank 0 publishes the combined plan."""
        staged = [stager.stage(tensors) for stager, tensors in zip(self.stagers, params, strict=True)]
        if corrupt_bucket is not None:
            self.stagers[0].staging[staged[0].offsets[corrupt_bucket] + 5] ^= 0xFF
        self.renew_trainers()
        return self.publish_staged(staged, step)

    def publish_staged(self, staged: list[StagedVersion], step: int) -> int:
        """Publish what the trainer ranks' stagers hold (``staged[rank]``, from their ``stage``);
        their leases must be current (``renew_trainers``)."""
        request = ce.PublishVersionRequest(trainer=ce.TrainerWeightSource(world_size=len(staged)))
        for rank, version in enumerate(staged):
            request.buckets.extend(wire.planned_buckets(version, self.trainer_ids[rank], first_index=len(request.buckets)))
        request.version.trainer_step = step
        request.version.total_bytes = sum(p.bucket.byte_size for p in request.buckets)
        return self.stub.PublishVersion(request, timeout=30).version.version

    def renew_trainers(self) -> None:
        """Keep the trainer ranks' leases (a real trainer heartbeats on a timer)."""
        for rank, worker_id in enumerate(self.trainer_ids):
            try:
                self.stub.Heartbeat(ce.HeartbeatRequest(worker_id=worker_id), timeout=10)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self.trainer_ids[rank] = self._register_trainer(rank)

    def _register_trainer(self, rank: int) -> str:
        return self.stub.RegisterWorker(ce.RegisterWorkerRequest(
            kind=ce.WORKER_KIND_TRAINER_RANK, instance_name=f"trainer-{rank}", rank=rank, world_size=2),
            timeout=10).worker_id

    def wait(self, version: int, timeout: float = 60) -> ce.WaitForVersionResponse:
        messages = list(self.stub.WaitForVersion(ce.WaitForVersionRequest(min_version=version), timeout=timeout))
        assert messages, "WaitForVersion ended without a message"
        return messages[-1]

    def held(self, name: str) -> tuple[int, dict[str, torch.Tensor]]:
        """The version and tensors replica ``name`` last applied."""
        path = self.out / f"{name}.safetensors"
        if not path.exists():
            return 0, {}
        with safe_open(str(path), framework="pt") as f:
            return int(f.metadata()["version"]), {k: f.get_tensor(k) for k in f.keys()}

    def expected(self, name: str, params: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        merged = {k: v for p in params for k, v in p.items()}
        selectors = self.selectors[name] or [Selector(k) for k in merged]
        return {s.name: s.apply(merged[s.name]).contiguous() for s in selectors}


def make_params(seed: int, layers: int = 3, width: int = 64) -> list[dict[str, torch.Tensor]]:
    """Two trainer ranks' parameters, HF-style names, mixed dtypes, one tensor above a bucket."""
    g = torch.Generator().manual_seed(seed)
    rank0 = {"model.embed_tokens.weight": torch.randn(256, width, generator=g).to(torch.bfloat16)}
    rank1 = {"lm_head.weight": torch.randn(256, width, generator=g).to(torch.bfloat16)}
    for i in range(layers):
        target = rank0 if i % 2 == 0 else rank1
        target[f"model.layers.{i}.self_attn.q_proj.weight"] = torch.randn(width, width, generator=g)
        target[f"model.layers.{i}.mlp.experts.0.up_proj.weight"] = torch.randn(2 * width, width, generator=g).half()
        target[f"model.layers.{i}.input_layernorm.weight"] = torch.randn(width, generator=g)
    return [rank0, rank1]


@contextmanager
def cluster(tmp_path: Path, *, workers: int = 2, bucket_bytes: int = 16 * 1024, pipeline: str = "two_stage",
            verify_source: bool = True, collective_timeout_s: float = 10, lease_ttl_ms: int = 3000,
            data_path: str = "auto", checksum: ChecksumAlgorithm = ChecksumAlgorithm.XXH3_64,
            trace_file: Path | None = None) -> Iterator[Cluster]:
    """``trace_file``: the coordinator and the engine workers append their spans there."""
    out = tmp_path / "replicas"
    out.mkdir()
    tracing = {} if trace_file is None else {"trace_file": trace_file}
    worker_env = {**os.environ, **({"K2RL_TRACE_FILE": str(trace_file)} if trace_file else {})}
    with ExitStack() as stack:
        runtime = stack.enter_context(serve_in_process(SERVICE, state_url=f"sqlite:///{tmp_path}/state.db",
                                                       bucket_bytes=bucket_bytes, lease_ttl_ms=lease_ttl_ms,
                                                       **tracing))
        address = runtime.settings.address
        channel = grpc.insecure_channel(address)
        stack.callback(channel.close)
        metrics_url = f"http://{runtime.settings.metrics_host}:{runtime.metrics_endpoint.port}/metrics"
        state = Cluster(address, metrics_url, checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub(channel), out, bucket_bytes)
        for rank in range(2):
            state.trainer_ids.append(state._register_trainer(rank))
            state.stagers.append(WeightStager(bucket_bytes, checksum, tag=f"test.trainer{rank}"))
            stack.callback(state.stagers[-1].close)
        master_port = free_loopback_port()
        for rank in range(workers):
            command = [sys.executable, "-m", "k2rl.checkpoint_engine.worker", "--coordinator", address,
                       "--rank", str(rank), "--world-size", str(workers), "--master-port", str(master_port),
                       "--bucket-bytes", str(bucket_bytes), "--pipeline", pipeline, "--data-path", data_path,
                       "--collective-timeout-s", str(collective_timeout_s), "--replica-timeout-s", "10"]
            if not verify_source:
                command.append("--no-verify-source-checksums")
            state.workers.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=worker_env))
        stack.callback(_stop_all, state)
        for worker in state.workers:  # each prints "ready <worker id>" once registered
            assert worker.stdout.readline().startswith("ready"), "engine worker failed to start"
        yield state


def _stop_all(state: Cluster) -> None:
    for process in [*state.replicas.values(), *state.workers]:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM if process in state.workers else signal.SIGKILL)
    for process in [*state.replicas.values(), *state.workers]:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

