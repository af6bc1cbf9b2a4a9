"""``k2rl run <config.yaml>``: start the services if needed, run the experiment, show progress.

An experiment is: pretraining through the trainer service (``pretrain:``), the pretrained
weights published to the inference replicas, held-out accuracy before RL (``evaluation:``),
the RL run through the controller (``run:``), held-out accuracy after. Writes
runs/<id>/config.yaml, services.yaml, metrics.jsonl (one line per iteration),
reward_curve.png, summary.json and logs/.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from k2rl.controller.deployment import EngineWorkers, wait_for_replicas
from k2rl.controller.experiment import (
    Experiment,
    RunDirectory,
    Summary,
    iteration_metrics,
    load_experiment,
)
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.stages import evaluate, pretrain, publish_and_wait
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.controller.v1 import controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.launcher import LocalCluster
from k2rl.models.tokenizer import load_tokenizer

app = typer.Typer(help="Run an RL experiment (K2 section 3.3) through the controller.")
console = Console()


def _status_table(run_id: str, state: dict[str, str]) -> Table:
    table = Table(title=f"run {run_id}", show_header=False)
    for key, value in state.items():
        table.add_row(key, value)
    return table


def follow(stub: controller_pb2_grpc.ControllerServiceStub, run_id: str, directory: RunDirectory) -> pb.Run:
    """Render WatchRun events live and record each finished iteration; returns the final run."""
    state = {"state": "RUNNING", "iteration": "0", "phase": "-", "reward": "-", "tokens/s": "-", "weights": "-"}
    with Live(_status_table(run_id, state), console=console, refresh_per_second=4) as live:
        for event in stub.WatchRun(pb.WatchRunRequest(run_id=run_id, after_sequence=0)):
            kind = event.WhichOneof("event")
            state["iteration"] = str(event.iteration)
            if kind == "phase_started":
                state["phase"] = pb.IterationPhase.Name(event.phase_started.phase).removeprefix("ITERATION_PHASE_")
            elif kind == "rollout_progress":
                p = event.rollout_progress
                state["phase"] = f"ROLLOUT {p.trajectories_finished}/{p.trajectories_target} ({p.generated_tokens} tok)"
            elif kind == "iteration_finished":
                record = event.iteration_finished
                directory.append_metrics(iteration_metrics(record))
                state["reward"] = ", ".join(f"{e.name} {e.reward_mean:.3f}" for e in record.environments) or "-"
                state["tokens/s"] = f"{record.rollout.generation_tokens_per_second:.0f}"
                state["weights"] = str(record.new_weight_version)
            elif kind == "state_changed":
                state["state"] = pb.RunState.Name(event.state_changed.state).removeprefix("RUN_STATE_")
            elif kind == "error":
                console.print(f"[red]error[/red] {event.error.error.code}: {event.error.error.message}")
            live.update(_status_table(run_id, state))
    return stub.GetRun(pb.GetRunRequest(run_id=run_id), timeout=30).run


@app.callback(invoke_without_command=True)
def run(
    config: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="experiment YAML (a 'run:' RunConfig)")],
    run_id: Annotated[str, typer.Option(help="id of the run; required with --resume")] = "",
    resume: Annotated[bool, typer.Option(help="resume run_id from its last completed iteration")] = False,
    start_services: Annotated[bool, typer.Option(help="start all services locally first (like `k2rl up`)")] = True,
    services_config: Annotated[Path | None, typer.Option(help="k2rl.yaml for the services (default: the "
                                                                "experiment's services: section)")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs/<id>/ is written")] = Path("runs"),
    free_ports: Annotated[bool, typer.Option(help="start the services on free loopback ports")] = False,
) -> None:
    experiment = load_experiment(config)
    run_id = run_id or experiment.run_id or f"run-{uuid.uuid4().hex[:10]}"
    directory = RunDirectory(runs_dir, run_id)
    services_file = services_config or directory.write_services_config(_services_for_run(experiment, directory))
    # The services' embedded state (SQLite, unless REDIS_URL or state_url says otherwise) lives
    # in the run directory, so separate runs never share weight versions or run records.
    state_env = {"K2RL_STATE_DIR": str(directory.path)}
    cluster = LocalCluster(config_file=services_file, free_ports=free_ports or experiment.inference_replicas > 1,
                           log_dir=directory.path / "logs", extra_env=state_env,
                           inference_replicas=experiment.inference_replicas) if start_services else None
    workers = EngineWorkers()
    summary = Summary(run_id)
    try:
        if cluster is not None:
            console.print(f"starting services (logs in {directory.path / 'logs'})")
            cluster.start()
            cluster.wait_until_serving(timeout_s=experiment.startup_timeout_s)
            if experiment.engine_workers:
                workers.start(cluster.settings["checkpoint_engine"].address, experiment.engine_workers,
                              services_file, directory.path / "logs", timeout_s=experiment.startup_timeout_s)
            addresses = cluster.dependency_addresses()
        else:
            controller = LocalCluster(services=("controller",), config_file=services_file).settings["controller"]
            addresses = {**controller.dependencies, "controller": controller.address}
        _run_experiment(experiment, addresses, run_id, resume, directory, summary)
    except grpc.RpcError as error:
        console.print(f"[red]{error.code().name}[/red]: {error.details()}")
        raise typer.Exit(1) from None
    finally:
        workers.stop()
        if cluster is not None:
            cluster.stop()
    if summary.final_state != "SUCCEEDED":
        raise typer.Exit(1)


def _services_for_run(experiment: Experiment, directory: RunDirectory) -> dict[str, object]:
    """The experiment's services section; with critic_data on, the judge writes its pairs
    under runs/<id>/critic_data unless the section names another directory."""
    services = {name: dict(value) if isinstance(value, dict) else value
                for name, value in experiment.services.items()}
    if experiment.run.critic_data.every_iterations:
        judge = services.setdefault("judge", {})
        judge.setdefault("critic_data_dir", str((directory.path / "critic_data").resolve()))
    return services


def _run_experiment(experiment: Experiment, addresses: dict[str, str], run_id: str, resume: bool,
                    directory: RunDirectory, summary: Summary) -> None:
    options = ClientOptions()
    stubs: list[object] = []

    def stub(stub_type: type, address: str) -> object:
        stubs.append(create_stub(stub_type, address, options))
        return stubs[-1]

    run_config = experiment.run
    clients = ServiceClients.connect({k: v for k, v in addresses.items() if k != "controller"}, stub)
    controller = stub(controller_pb2_grpc.ControllerServiceStub, addresses["controller"])
    tokenizer = load_tokenizer(run_config.model_preset)
    try:
        wait_for_replicas(clients.checkpoint_engine, len(clients.replicas), experiment.startup_timeout_s)
        if not resume:
            if experiment.pretrain.steps:
                with console.status("pretraining") as status:
                    result = pretrain(clients, run_config, experiment.pretrain, tokenizer, on_step=lambda step, loss:
                                      status.update(f"pretraining: step {step}/{experiment.pretrain.steps}, "
                                                    f"loss {loss:.3f}"))
                summary.pretrain = result
                console.print(f"pretrained {result.steps} steps in {result.seconds:.1f}s, loss {result.final_loss:.3f}")
            version = publish_and_wait(clients)
            console.print(f"inference replicas serve the trainer's weights as version {version}")
            if experiment.evaluation.tasks:
                summary.baseline = evaluate(clients, run_config, experiment.evaluation, tokenizer)
                console.print(f"held-out accuracy before RL: {summary.baseline.accuracy:.1%} "
                              f"({summary.baseline.correct}/{summary.baseline.tasks})")
            directory.write_summary(summary.to_json())
        started = controller.StartRun(pb.StartRunRequest(config=run_config, run_id=run_id, resume=resume),
                                      timeout=60).run
        directory.write_config(started.config)
        final = follow(controller, started.run_id, directory)
        summary.final_state = pb.RunState.Name(final.state).removeprefix("RUN_STATE_")
        summary.completed_iterations = final.completed_iterations
        summary.weight_version = final.weight_version
        summary.iterations = list(controller.ListIterations(pb.ListIterationsRequest(run_id=run_id),
                                                            timeout=60).iterations)
        if final.state == pb.RUN_STATE_SUCCEEDED and experiment.evaluation.tasks:
            summary.final = evaluate(clients, run_config, experiment.evaluation, tokenizer)
        plot = directory.plot_rewards()
        directory.write_summary(summary.to_json())
        console.print(summary.table())
        console.print(f"run {final.run_id}: {summary.final_state}, {final.completed_iterations} iterations, "
                      f"weights v{final.weight_version}; wrote {directory.path}" + (f" ({plot.name})" if plot else ""))
    finally:
        for made in stubs:
            close_stub(made)
