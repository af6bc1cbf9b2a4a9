"""``k2rl run <config.yaml>``: start the services if needed, run the experiment, show progress.

Writes runs/<id>/config.yaml, metrics.jsonl (one line per iteration) and reward_curve.png.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import grpc
import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table

from k2rl.controller.experiment import RunDirectory, iteration_metrics, load_experiment
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.controller.v1 import controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.launcher import LocalCluster

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
    services_config: Annotated[Path | None, typer.Option(help="k2rl.yaml for the services")] = None,
    runs_dir: Annotated[Path, typer.Option(help="where runs/<id>/ is written")] = Path("runs"),
) -> None:
    run_config, extra = load_experiment(config)
    cluster = LocalCluster(config_file=services_config) if start_services else None
    if cluster is not None:
        cluster.start()
        cluster.wait_until_serving(timeout_s=float(extra.get("startup_timeout_s", 300)))
    address = (cluster.settings["controller"].address if cluster is not None
               else LocalCluster(services=("controller",), config_file=services_config).settings["controller"].address)
    stub = create_stub(controller_pb2_grpc.ControllerServiceStub, address, ClientOptions())
    try:
        started = stub.StartRun(pb.StartRunRequest(config=run_config, run_id=run_id or extra.get("run_id", ""),
                                                   resume=resume), timeout=60).run
        directory = RunDirectory(runs_dir, started.run_id)
        directory.write_config(started.config)
        final = follow(stub, started.run_id, directory)
        plot = directory.plot_rewards()
        console.print(f"run {final.run_id}: {pb.RunState.Name(final.state)}, {final.completed_iterations} iterations, "
                      f"weights v{final.weight_version}; wrote {directory.path}" + (f" ({plot.name})" if plot else ""))
        if final.state != pb.RUN_STATE_SUCCEEDED:
            raise typer.Exit(1)
    except grpc.RpcError as error:
        console.print(f"[red]{error.code().name}[/red]: {error.details()}")
        raise typer.Exit(1) from None
    finally:
        close_stub(stub)
        if cluster is not None:
            cluster.stop()
