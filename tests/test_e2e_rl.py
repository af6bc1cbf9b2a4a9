"""The main job end to end: `k2rl run configs/demo-quick.yaml` with every service as its own
process over gRPC on loopback (trainer, inference, checkpoint engine + its worker, controller,
sandbox, judge): pretraining through the trainer, weights published through the checkpoint
engine, held-out accuracy before and after, RL iterations with partial rollout.

While the command runs, this test watches the live services through their own contracts
(inference GetModelInfo, checkpoint-engine GetVersion, /metrics); afterwards it reads what
the run left: runs/<id>/ and the controller's durable state (finished trajectories).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import yaml

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce_pb2
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.controller.run_store import RunStore
from k2rl.core.config import SERVICE_NAMES
from k2rl.core.net import free_loopback_port
from k2rl.core.store import open_store
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "demo-quick.yaml"
RUN_ID = "e2e-quick"
PHASES = ("inference_wake", "rollout", "inference_sleep", "trainer_onload", "train", "trainer_offload",
          "weight_update")


def _services_config(tmp: Path) -> tuple[Path, dict[str, dict]]:
    """The experiment's services section with known free ports, so the test can watch them."""
    services = yaml.safe_load(QUICK.read_text())["services"]
    for name in SERVICE_NAMES:
        services.setdefault(name, {}).update(port=free_loopback_port(), metrics_port=free_loopback_port())
    services["state_url"] = f"sqlite:///{tmp}/state.db"
    services["judge"]["critic_data_dir"] = str(tmp / "critic_data")
    path = tmp / "services.yaml"
    path.write_text(yaml.safe_dump(services))
    return path, services


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        return response.read().decode()


def _sample(metrics: str, name: str, **labels: str) -> float:
    """Value of one Prometheus sample (0 when absent)."""
    for line in metrics.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_quick_demo_runs_rl_through_every_service_as_a_process(tmp_path: Path) -> None:
    services_file, services = _services_config(tmp_path)
    inference = inference_pb2_grpc.InferenceServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{services['inference']['port']}"))
    engine = checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub(
        grpc.insecure_channel(f"127.0.0.1:{services['checkpoint_engine']['port']}"))
    log = (tmp_path / "k2rl-run.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "k2rl.core.cli", "run", "--services-config", str(services_file),
         "--runs-dir", str(tmp_path / "runs"), "--run-id", RUN_ID, str(QUICK)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env={"COLUMNS": "200", **_env()})
    served_versions: set[int] = set()
    replica_status: list[ce_pb2.ReplicaVersion] = []
    controller_metrics = trainer_metrics = ""
    deadline = time.monotonic() + 330
    try:
        while process.poll() is None:
            assert time.monotonic() < deadline, "k2rl run did not finish in time"
            try:
                served_versions.add(inference.GetModelInfo(inference_pb2.GetModelInfoRequest(),
                                                           timeout=2).weight_version.version)
                replica_status = list(engine.GetVersion(ce_pb2.GetVersionRequest(), timeout=2).replicas)
                controller_metrics = _scrape(services["controller"]["metrics_port"])
                trainer_metrics = _scrape(services["trainer"]["metrics_port"])
            except (grpc.RpcError, OSError):
                pass  # not up yet, or already stopping
            time.sleep(0.5)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)
        log.close()
    output = (tmp_path / "k2rl-run.log").read_text()
    assert process.returncode == 0, output[-5000:]

    run_dir = tmp_path / "runs" / RUN_ID
    summary = json.loads((run_dir / "summary.json").read_text())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    iterations = yaml.safe_load(QUICK.read_text())["run"]["iterations"]
    assert summary["state"] == "SUCCEEDED" and summary["completed_iterations"] == iterations
    assert (run_dir / "reward_curve.png").stat().st_size > 0 and (run_dir / "config.yaml").exists()

    # pretraining through the trainer, then version 1 on the replica, evaluated before RL
    assert summary["pretrain"]["steps"] > 0 and summary["pretrain"]["final_loss"] < 1.5
    before, after = summary["held_out_before_rl"], summary["held_out_after_rl"]
    assert before["weight_versions"] == [1] and before["tasks"] == after["tasks"] > 0
    assert 0 < before["accuracy"] < 1, "pretraining must leave the model between chance and perfect"

    # reward recorded each iteration; the weight version increments by one per iteration
    assert [line["iteration"] for line in lines] == list(range(iterations))
    assert all(0 <= line["arithmetic/reward_mean"] <= 1 for line in lines)
    assert [line["rollout_weight_version"] for line in lines] == list(range(1, iterations + 1))
    assert [line["new_weight_version"] for line in lines] == list(range(2, iterations + 2))
    final_version = iterations + 1
    # ... and the inference replica reports it: in its model info, to the checkpoint engine,
    # and on every token it generated in the held-out evaluation after RL
    assert after["weight_versions"] == [final_version]
    assert {1, final_version} <= served_versions <= set(range(iterations + 2))
    assert [(r.weight_version, r.live) for r in replica_status] == [(final_version, True)]

    # partial rollouts occur and are resumed in a later iteration
    assert sum(line["rollout/trajectories_paused"] for line in lines) > 0
    assert sum(line["rollout/trajectories_resumed"] for line in lines) > 0

    # finished trajectories (durable in the controller's store) carry logprobs, and resumed
    # ones span weight versions of the iterations they were generated in
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        trajectories = list(RunStore(store).finished_trajectories(RUN_ID))
    finally:
        store.close()
    # exactly the trained ones (whole groups; finished samples of incomplete groups stay buffered), none twice
    assert len(trajectories) == sum(it["trajectories"] for it in summary["iterations"]) > 0
    assert len({t.trajectory_id for t in trajectories}) == len(trajectories)
    for t in trajectories:
        assert len(t.output_logprobs) == len(t.output_token_ids) > 0, t.trajectory_id
        assert all(lp <= 0 for lp in t.output_logprobs) and t.HasField("reward")
        assert {turn.weight_version for turn in t.turns} <= set(range(1, final_version))
    resumed = [t for t in trajectories if t.resume_count > 0]
    assert resumed, "no trajectory was resumed after a pause"

    # the controller handed trained groups to the judge's critic-data export (every 2nd iteration)
    pairs = [json.loads(line) for line in (tmp_path / "critic_data" / "critic_refinement.jsonl").read_text().splitlines()]
    assert pairs, "no critic-refinement pair was written"
    assert all(p["chosen_reward"] == 1.0 and p["rejected_reward"] == 0.0 and p["verifier"] == "exact_integer"
               and p["prompt"].endswith("=") for p in pairs)

    # the metrics endpoints show the phases
    for phase in PHASES:
        assert _sample(controller_metrics, "k2rl_controller_phase_seconds_count", phase=phase) >= 1, phase
    assert _sample(controller_metrics, "k2rl_controller_trajectories_total", outcome="paused") > 0
    for method in ("Onload", "TrainStep", "Offload", "PublishWeights"):
        assert _sample(trainer_metrics, "k2rl_grpc_server_handled_total", grpc_method=method, grpc_code="OK") >= 1
    assert re.search(r"held-out accuracy before RL: [\d.]+%", output)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("K2RL_")}
