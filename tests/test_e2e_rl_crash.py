"""kill -9 of the controller against the real services, twice: during the rollout phase and
during training. Every service is its own process on loopback (trainer, two inference
replicas, checkpoint engine + its worker, judge, sandbox, controller), with the quick demo's
settings and no pretraining (crash safety does not need a trained model).

After each SIGKILL a fresh controller process resumes the run from the state store. The
run must complete with every trajectory trained and logged exactly once, no train step
applied twice (the trainer's step count equals the recorded steps), partial rollouts
resumed, and rollouts spread over both replicas, which both end on the final weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k2rl.controller.deployment import EngineWorkers, wait_for_replicas
from k2rl.controller.experiment import load_experiment
from k2rl.controller.run_store import RunStore
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.stages import publish_and_wait
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.controller.v1 import controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.health import wait_until_serving
from k2rl.core.launcher import LocalCluster
from k2rl.core.store import open_store
from k2rl.inference.v1 import inference_pb2
from k2rl.trainer.v1 import trainer_pb2

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "demo-quick.yaml"
RUN_ID = "crash-real"
ITERATIONS = 4


def _generate_calls(metrics: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("k2rl_grpc_server_handled_total{") and 'grpc_method="Generate"' in line)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[LocalCluster, Path]]:
    experiment = load_experiment(QUICK)
    services_file = tmp_path / "services.yaml"
    services_file.write_text(yaml.safe_dump({**experiment.services, "state_url": f"sqlite:///{tmp_path}/state.db"}))
    cluster = LocalCluster(config_file=services_file, free_ports=True, log_dir=tmp_path / "logs",
                           extra_env={"K2RL_STATE_DIR": str(tmp_path)}, inference_replicas=2)
    workers = EngineWorkers()
    try:
        cluster.start()
        cluster.wait_until_serving(timeout_s=240)
        workers.start(cluster.settings["checkpoint_engine"].address, 1, services_file, tmp_path / "logs",
                      timeout_s=120)
        yield cluster, services_file
    finally:
        workers.stop()
        cluster.stop()


def restart_controller(cluster: LocalCluster, services_file: Path, log: Path) -> subprocess.Popen[bytes]:
    """A new controller process on the same ports and state (what a supervisor would do)."""
    settings = cluster.settings["controller"]
    env = {**os.environ, "K2RL_STATE_DIR": str(services_file.parent),
           "K2RL_DEPENDENCIES": json.dumps(cluster.dependency_addresses())}
    with log.open("ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "k2rl.core.cli", "serve", "controller", "--port",
                                    str(settings.grpc_port), "--metrics-port", str(settings.prometheus_port),
                                    "--config", str(services_file)], stdout=out, stderr=subprocess.STDOUT, env=env,
                                   start_new_session=True)
    probe = wait_until_serving("controller", settings.address, 120, ClientOptions())
    assert probe.serving, log.read_text()[-3000:]
    return process


def wait_for_phase(stub: controller_pb2_grpc.ControllerServiceStub, phase: int, iteration: int,
                   timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = stub.GetRun(pb.GetRunRequest(run_id=RUN_ID), timeout=10).run
        if run.current_phase == phase and run.current_iteration >= iteration:
            return
        assert run.state == pb.RUN_STATE_RUNNING, run
        time.sleep(0.005)
    raise TimeoutError(f"phase {pb.IterationPhase.Name(phase)} of iteration {iteration} not reached")


@pytest.mark.slow
def test_kill_9_of_the_controller_against_real_services_loses_and_duplicates_nothing(
        deployment: tuple[LocalCluster, Path], tmp_path: Path) -> None:
    cluster, services_file = deployment
    addresses = cluster.dependency_addresses()
    stubs: list[object] = []

    def stub(stub_type: type, address: str) -> object:
        stubs.append(create_stub(stub_type, address, ClientOptions()))
        return stubs[-1]

    clients = ServiceClients.connect({k: v for k, v in addresses.items() if k != "controller"}, stub)
    controller = stub(controller_pb2_grpc.ControllerServiceStub, addresses["controller"])
    process = cluster.launched["controller"].process
    try:
        assert [name for name, _ in clients.replicas] == ["inference", "inference-1"]
        wait_for_replicas(clients.checkpoint_engine, 2, 120)
        assert publish_and_wait(clients) == 1
        config = load_experiment(QUICK).run
        config.iterations = ITERATIONS
        controller.StartRun(pb.StartRunRequest(config=config, run_id=RUN_ID), timeout=60)
        for phase, iteration in ((pb.ITERATION_PHASE_ROLLOUT, 1), (pb.ITERATION_PHASE_TRAIN, 2)):
            wait_for_phase(controller, phase, iteration)
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            process = restart_controller(cluster, services_file, tmp_path / "logs" / "controller-restarted.log")
            assert controller.GetRun(pb.GetRunRequest(run_id=RUN_ID), timeout=10).run.state == pb.RUN_STATE_RUNNING
            controller.StartRun(pb.StartRunRequest(run_id=RUN_ID, resume=True), timeout=60)
        deadline = time.monotonic() + 240
        while (run := controller.GetRun(pb.GetRunRequest(run_id=RUN_ID), timeout=10).run).state in (
                pb.RUN_STATE_RUNNING, pb.RUN_STATE_STOPPING):
            assert time.monotonic() < deadline, "the resumed run did not finish"
            time.sleep(0.2)
        assert run.state == pb.RUN_STATE_SUCCEEDED, run.error
        records = list(controller.ListIterations(pb.ListIterationsRequest(run_id=RUN_ID), timeout=30).iterations)
        trainer_step = clients.trainer.GetState(trainer_pb2.GetStateRequest(), timeout=30).step
        replica_versions = [replica.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=30).weight_version.version
                            for _, replica in clients.replicas]
    finally:
        for made in stubs:
            close_stub(made)
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    assert [r.iteration for r in records] == list(range(ITERATIONS))
    # No train step applied twice: the trainer did exactly the recorded steps (none before RL).
    recorded_steps = sum(len(r.train_steps) for r in records)
    assert trainer_step == recorded_steps == run.trainer_step > 0
    assert replica_versions == [run.weight_version] * 2 == [records[-1].new_weight_version] * 2
    store = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        trajectories = list(RunStore(store).finished_trajectories(RUN_ID))
    finally:
        store.close()
    ids = [t.trajectory_id for t in trajectories]
    assert len(ids) == len(set(ids)) == sum(e.trajectories for r in records for e in r.environments) > 0
    assert all(len(t.output_logprobs) == len(t.output_token_ids) > 0 for t in trajectories)
    assert any(t.resume_count > 0 for t in trajectories), "no partial rollout was resumed"
    for name in ("inference", "inference-1"):
        assert _generate_calls(cluster.scrape_metrics(name)) > 0, f"{name} served no rollout"
