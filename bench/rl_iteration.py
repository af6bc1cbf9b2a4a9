"""Seconds per RL iteration and where they go: every service its own process vs all in one.

Prints one JSON line. For each mode (``--modes``), brings up the six services
(``LocalCluster``, free loopback ports, the quick demo's service settings) and one
checkpoint-engine worker, pretrains k2-nano a little (so responses look like the demo's),
then runs ``--iterations`` RL iterations of the quick config through the controller
(StartRun over gRPC). The modes, measured back to back with the same config and seeds:

* ``colocated`` (K2 section 3.3.1: inference sleeps while the trainer trains), every
  service its own process, as ``k2rl run`` deploys them.
* ``colocated_one_process``: the same iteration with the six services' real servicers
  served from this one process (``LocalCluster(in_process=True)``), the controller's loop
  included. Still gRPC, but over loopback inside one process: no process boundaries, one
  Python heap and GIL. What stays outside: the checkpoint-engine worker (its own
  torch.distributed group, as in ``k2rl run``), the judge's math-verifier process pool
  and the sandbox's confined programs.
  ``services_over_one_process`` = colocated seconds per iteration over this mode's (the
  services' overhead; target <= 1.10); ``services_over_one_process_phase`` the same per phase.
* ``overlap`` (disaggregated: no sleep/offload, iteration n+1 rolls out while n trains,
  staleness bounded by max_version_lag), every service its own process;
  ``overlap_speedup`` is colocated seconds per iteration over overlap's.

The first ``--warmup`` iterations are not counted. Figures per mode:

* ``iteration_s``: mean wall seconds per counted iteration (end of the previous iteration
  to the end of this one).
* ``phase_s`` / ``phase_share``: mean seconds of each phase (wake, rollout, scoring, sleep,
  onload, train, offload, weight update) and its share of the iteration; ``unaccounted``
  is what falls between phases (store commits, GetState, drawing prompts).
* ``engine_switch_share``: wake + sleep + onload + offload + weight update over the
  iteration: what colocation costs (K2 section 3.3.2).
* ``rollout_tokens_per_s`` vs ``bare_generate_tokens_per_s``: after the run, the same
  prompts with the same response lengths (every finished trajectory of the run, replayed
  with min_tokens = max_tokens = its length) as bare Generate calls at the run's
  concurrency, straight to the replica; ``rollout_vs_bare_generate`` is their ratio
  (what the rollout manager, partial rollout and scoring cost on top of generation).
* ``train_rpc_overhead``: train-phase wall time over the trainer's own step_time_ms (the
  cost of streaming trajectories in and of the RPC).

    python bench/rl_iteration.py                    # ~3 minutes on 2 cores (all three modes)
    python bench/rl_iteration.py --modes colocated,colocated_one_process --iterations 20   # steadier ratio
    python bench/rl_iteration.py --iterations 10 --pretrain-steps 0
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import yaml

from k2rl.common.v1 import common_pb2
from k2rl.controller.deployment import EngineWorkers, wait_for_replicas
from k2rl.controller.experiment import Experiment, load_experiment
from k2rl.controller.run_store import RunStore
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.stages import PretrainSpec, pretrain, publish_and_wait
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.controller.v1 import controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.launcher import LocalCluster
from k2rl.core.store import open_store
from k2rl.inference.v1 import inference_pb2
from k2rl.models.tokenizer import load_tokenizer

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "configs" / "demo-quick.yaml"
SWITCH_PHASES = ("inference_wake", "inference_sleep", "trainer_onload", "trainer_offload", "weight_update")


def phase_name(phase: int) -> str:
    return pb.IterationPhase.Name(phase).removeprefix("ITERATION_PHASE_").lower()


def run_rl(controller: object, config: pb.RunConfig, timeout_s: float) -> list[pb.IterationRecord]:
    controller.StartRun(pb.StartRunRequest(config=config, run_id="bench"), timeout=60)  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while True:
        run = controller.GetRun(pb.GetRunRequest(run_id="bench"), timeout=10).run  # type: ignore[attr-defined]
        if run.state not in (pb.RUN_STATE_PENDING, pb.RUN_STATE_RUNNING, pb.RUN_STATE_STOPPING):
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"the run did not finish in {timeout_s:.0f}s")
        time.sleep(0.2)
    if run.state != pb.RUN_STATE_SUCCEEDED:
        raise RuntimeError(f"run ended {pb.RunState.Name(run.state)}: {run.error.message}")
    request = pb.ListIterationsRequest(run_id="bench")
    return list(controller.ListIterations(request, timeout=60).iterations)  # type: ignore[attr-defined]


def phase_breakdown(all_records: list[pb.IterationRecord], warmup: int) -> dict[str, object]:
    """Figures over the records after ``warmup`` (>= 1): an iteration lasts from the end of
    the previous one to its own end, which counts a rollout that ran ahead (overlap) once."""
    ends = [r.end_time.ToNanoseconds() / 1e9 for r in all_records]
    seconds = [b - a for a, b in zip(ends[warmup - 1:], ends[warmup:], strict=False)]
    records = all_records[warmup:]
    iteration_s = statistics.mean(seconds)
    phases: dict[str, float] = {}
    for record in records:
        for timing in record.phases:
            phases[phase_name(timing.phase)] = phases.get(phase_name(timing.phase), 0.0) + timing.duration_ms / 1e3
    phase_s = {name: total / len(records) for name, total in phases.items()}
    # Scoring overlaps generation (and in overlap mode rollout overlaps training): phases can
    # sum to more than the iteration; "unaccounted" is what lies between phases, if anything.
    phase_s["unaccounted"] = max(0.0, iteration_s - sum(phase_s.values()))
    rollout_s = phases.get("rollout", 0.0)
    tokens = sum(r.rollout.generated_tokens for r in records)
    step_ms = sum(s.step_time_ms for r in records for s in r.train_steps)
    return {
        "iteration_s": round(iteration_s, 4),
        "iteration_s_stdev": round(statistics.stdev(seconds), 4) if len(seconds) > 1 else 0.0,
        "phase_s": {k: round(v, 4) for k, v in phase_s.items()},
        "phase_share": {k: round(v / iteration_s, 4) for k, v in phase_s.items()},
        "engine_switch_share": round(sum(phase_s.get(p, 0.0) for p in SWITCH_PHASES) / iteration_s, 4),
        "rollout_tokens": tokens,
        "rollout_tokens_per_s": round(tokens / rollout_s, 2) if rollout_s else 0.0,
        "train_rpc_overhead": round(phases.get("train", 0.0) * 1e3 / step_ms, 3) if step_ms else None,
    }


def bare_generate(replicas: list[tuple[str, object]], prompts: list[tuple[list[int], int]], concurrency: int,
                  stops: list[int]) -> tuple[int, float]:
    """Generate each (prompt, length) exactly ``length`` tokens; returns (tokens, seconds)."""
    for _, replica in replicas:
        replica.WakeUp(inference_pb2.WakeUpRequest(), timeout=120)  # type: ignore[attr-defined]

    def one(index: int) -> int:
        prompt, length = prompts[index]
        params = common_pb2.SamplingParams(temperature=1.0, max_tokens=length, min_tokens=length, seed=index,
                                           stop_token_ids=stops)
        request = inference_pb2.GenerateRequest(request_id=f"bare-{time.monotonic_ns()}-{index}",
                                                prompt_token_ids=inference_pb2.TokenIds(ids=prompt),
                                                sampling_params=params)
        _, replica = replicas[index % len(replicas)]
        return sum(len(c.token_ids) for c in replica.Generate(request, timeout=120))  # type: ignore[attr-defined]

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(min(len(prompts), concurrency))))  # warm-up
        started = time.perf_counter()
        tokens = sum(pool.map(one, range(len(prompts))))
        return tokens, time.perf_counter() - started


@dataclass(frozen=True)
class Mode:
    """The controller's scheduling settings and whether the services share this process."""

    controller: dict[str, bool]
    one_process: bool = False


COLOCATED = {"colocated": True}
MODES = {
    "colocated": Mode(COLOCATED),
    "colocated_one_process": Mode(COLOCATED, one_process=True),
    # Disaggregated: no Sleep/WakeUp/Onload/Offload; iteration n+1 rolls out while n trains.
    "overlap": Mode({"colocated": False, "overlap_rollout": True}),
}


def measure(experiment: Experiment, config: pb.RunConfig, mode: str, args: argparse.Namespace) -> dict[str, object]:
    """One deployment in ``mode``: pretrain a little, run the iterations, replay as bare Generate."""
    with tempfile.TemporaryDirectory(prefix="k2rl-bench-rl-") as tmp:
        tmp_path = Path(tmp)
        services = {**experiment.services, "state_url": f"sqlite:///{tmp}/state.db"}
        services["controller"] = {**services.get("controller", {}), **MODES[mode].controller}
        services_file = tmp_path / "services.yaml"
        services_file.write_text(yaml.safe_dump(services))
        one_process = MODES[mode].one_process
        cluster = LocalCluster(config_file=services_file, free_ports=True, log_dir=tmp_path / "logs",
                               extra_env=None if one_process else {"K2RL_STATE_DIR": tmp}, in_process=one_process)
        workers = EngineWorkers()
        stubs: list[object] = []

        def stub(stub_type: type, address: str) -> object:
            stubs.append(create_stub(stub_type, address, ClientOptions()))
            return stubs[-1]

        try:
            started = time.perf_counter()
            cluster.start()
            cluster.wait_until_serving(timeout_s=experiment.startup_timeout_s)
            workers.start(cluster.settings["checkpoint_engine"].address, max(1, experiment.engine_workers),
                          services_file, tmp_path / "logs", timeout_s=experiment.startup_timeout_s)
            addresses = cluster.dependency_addresses()
            clients = ServiceClients.connect({k: v for k, v in addresses.items() if k != "controller"}, stub)
            controller = stub(controller_pb2_grpc.ControllerServiceStub, addresses["controller"])
            wait_for_replicas(clients.checkpoint_engine, len(clients.replicas), experiment.startup_timeout_s)
            tokenizer = load_tokenizer(config.model_preset)
            if args.pretrain_steps:
                spec = PretrainSpec(**{**experiment.pretrain.model_dump(), "steps": args.pretrain_steps})
                pretrain(clients, config, spec, tokenizer)
            publish_and_wait(clients)
            startup_s = time.perf_counter() - started
            records = run_rl(controller, config, args.timeout_s)
            figures = phase_breakdown(records, args.warmup)
            store = open_store(f"sqlite:///{tmp}/state.db")
            try:
                replay = [(list(t.prompt_token_ids), len(t.output_token_ids))
                          for t in RunStore(store).finished_trajectories("bench") if t.output_token_ids]
            finally:
                store.close()
            tokens, seconds = bare_generate(clients.replicas, replay, config.max_concurrent_rollouts or 64,
                                            list(tokenizer.stop_token_ids))
        finally:
            for made in stubs:
                close_stub(made)
            workers.stop()
            cluster.stop()
    bare_rate = tokens / seconds
    return {
        "deployment": "one_process" if MODES[mode].one_process else "process_per_service",
        "startup_s": round(startup_s, 1),
        **figures,
        "bare_generate_tokens": tokens,
        "bare_generate_tokens_per_s": round(bare_rate, 2),
        "rollout_vs_bare_generate": round(figures["rollout_tokens_per_s"] / bare_rate, 3) if bare_rate else None,
    }


def services_overhead(services: dict, one_process: dict) -> dict[str, object]:
    """Seconds per iteration (and per phase) as separate services over all in one process."""
    phases = {name: round(seconds / one_process["phase_s"][name], 3)
              for name, seconds in services["phase_s"].items() if one_process["phase_s"].get(name)}
    return {"services_over_one_process": round(services["iteration_s"] / one_process["iteration_s"], 3),
            "services_over_one_process_phase": phases}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=QUICK, help="experiment YAML whose run: and services: are used")
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="first iterations not counted")
    parser.add_argument("--pretrain-steps", type=int, default=20)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--timeout-s", type=float, default=600)
    args = parser.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not 1 <= args.warmup < args.iterations:
        parser.error("need 1 <= --warmup < --iterations")
    if not modes or set(modes) - set(MODES):
        parser.error(f"--modes must name some of {', '.join(MODES)}")
    experiment = load_experiment(args.config)
    config = pb.RunConfig()
    config.CopyFrom(experiment.run)
    config.iterations = args.iterations
    results = {mode: measure(experiment, config, mode, args) for mode in modes}
    line: dict[str, object] = {
        "bench": "rl_iteration",
        "config": args.config.name,
        "run": {"prompts_per_iteration": config.prompts_per_iteration, "samples_per_prompt": config.samples_per_prompt,
                "iteration_token_budget": config.partial_rollout.iteration_token_budget},
        "iterations_counted": args.iterations - args.warmup,
        **results,
    }
    if {"colocated", "colocated_one_process"} <= set(results):
        line.update(services_overhead(results["colocated"], results["colocated_one_process"]))
    if {"colocated", "overlap"} <= set(results):
        line["overlap_speedup"] = round(results["colocated"]["iteration_s"] / results["overlap"]["iteration_s"], 3)
    print(json.dumps(line))


if __name__ == "__main__":
    main()
