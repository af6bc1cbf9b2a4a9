"""An experiment YAML (``k2rl run``) and what it writes under runs/<id>/: the config, the
services' settings, metrics.jsonl, a reward curve and summary.json (baseline vs final)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format
from rich.table import Table

from k2rl.controller.stages import Evaluation, EvaluationSpec, PretrainResult, PretrainSpec
from k2rl.controller.v1 import controller_pb2 as pb

_KEYS = {"run", "run_id", "startup_timeout_s", "services", "engine_workers", "inference_replicas", "pretrain",
         "evaluation"}


@dataclass(frozen=True)
class Experiment:
    run: pb.RunConfig
    run_id: str = ""
    startup_timeout_s: float = 300.0
    services: dict[str, Any] = field(default_factory=dict)  # a k2rl.yaml for the services
    engine_workers: int = 1  # checkpoint-engine worker processes k2rl run starts; 0 = none
    inference_replicas: int = 1  # inference processes k2rl run starts; rollouts are spread over them
    pretrain: PretrainSpec = PretrainSpec()
    evaluation: EvaluationSpec = EvaluationSpec(tasks=0)


def load_experiment(path: Path) -> Experiment:
    """``run:`` is a RunConfig (proto JSON field names); the other keys are in ``Experiment``."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "run" not in data:
        raise ValueError(f"{path}: expected a mapping with a 'run:' section (a RunConfig)")
    unknown = set(data) - _KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; expected {sorted(_KEYS)}")
    return Experiment(
        run=json_format.ParseDict(data["run"], pb.RunConfig()), run_id=str(data.get("run_id", "")),
        startup_timeout_s=float(data.get("startup_timeout_s", 300)), services=dict(data.get("services") or {}),
        engine_workers=int(data.get("engine_workers", 1)),
        inference_replicas=_positive(data.get("inference_replicas", 1), path, "inference_replicas"), pretrain=PretrainSpec(**(data.get("pretrain") or {})),
        evaluation=EvaluationSpec(**(data.get("evaluation") or {"tasks": 0})))


def _positive(value: object, path: Path, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{path}: {key} must be an integer >= 1, got {value!r}")
    return value


@dataclass
class Summary:
    """summary.json: pretraining, held-out accuracy before and after RL, per-iteration figures."""

    run_id: str
    pretrain: PretrainResult | None = None
    baseline: Evaluation | None = None
    final: Evaluation | None = None
    final_state: str = "NOT_STARTED"
    completed_iterations: int = 0
    weight_version: int = 0
    iterations: list[pb.IterationRecord] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"run_id": self.run_id, "state": self.final_state,
                               "completed_iterations": self.completed_iterations,
                               "weight_version": self.weight_version}
        if self.pretrain is not None:
            p = self.pretrain
            out["pretrain"] = {"steps": p.steps, "final_loss": p.final_loss, "seconds": round(p.seconds, 2),
                               "trainer_step": p.trainer_step}
        if self.baseline is not None:
            out["held_out_before_rl"] = self.baseline.to_json()
        if self.final is not None:
            out["held_out_after_rl"] = self.final.to_json()
        if self.baseline is not None and self.final is not None:
            out["held_out_accuracy_gain"] = self.final.accuracy - self.baseline.accuracy
        out["iterations"] = [_iteration_summary(r) for r in self.iterations]
        if self.iterations:
            seconds = [it["seconds"] for it in out["iterations"]]
            out["iteration_seconds_mean"] = sum(seconds) / len(seconds)
        return out

    def table(self) -> Table:
        table = Table(title=f"run {self.run_id}")
        table.add_column("")
        table.add_column("value", justify="right")
        if self.pretrain is not None:
            table.add_row("pretraining", f"{self.pretrain.steps} steps, {self.pretrain.seconds:.0f}s, "
                                         f"loss {self.pretrain.final_loss:.3f}")
        for name, evaluation in (("held-out accuracy before RL", self.baseline), ("held-out accuracy after RL",
                                                                                  self.final)):
            if evaluation is not None:
                table.add_row(name, f"{evaluation.accuracy:.1%} ({evaluation.correct}/{evaluation.tasks})")
        data = self.to_json()
        if self.iterations:
            first, last = data["iterations"][0], data["iterations"][-1]
            table.add_row("reward mean, first -> last iteration", f"{first['reward_mean']:.3f} -> "
                                                                  f"{last['reward_mean']:.3f}")
            table.add_row("iteration time (mean)", f"{data['iteration_seconds_mean']:.1f}s")
        table.add_row("state", f"{self.final_state}, {self.completed_iterations} iterations, "
                               f"weights v{self.weight_version}")
        return table


def _iteration_summary(record: pb.IterationRecord) -> dict[str, Any]:
    trajectories = sum(e.trajectories for e in record.environments)
    reward = sum(e.reward_mean * e.trajectories for e in record.environments) / trajectories if trajectories else 0.0
    phases = {pb.IterationPhase.Name(p.phase).removeprefix("ITERATION_PHASE_").lower(): round(p.duration_ms / 1e3, 3)
              for p in record.phases}
    return {"iteration": record.iteration, "reward_mean": reward, "trajectories": trajectories,
            "seconds": (record.end_time.ToNanoseconds() - record.start_time.ToNanoseconds()) / 1e9,
            "new_weight_version": record.new_weight_version, "phase_seconds": phases}


def iteration_metrics(record: pb.IterationRecord) -> dict[str, Any]:
    """One metrics.jsonl line: rewards per environment, rollout counts, phase timings."""
    line: dict[str, Any] = {
        "iteration": record.iteration,
        "rollout_weight_version": record.rollout_weight_version,
        "new_weight_version": record.new_weight_version,
        **{f"rollout/{k}": v for k, v in json_format.MessageToDict(
            record.rollout, preserving_proto_field_name=True, always_print_fields_with_no_presence=True).items()},
        **{f"phase_ms/{pb.IterationPhase.Name(p.phase).removeprefix('ITERATION_PHASE_').lower()}": p.duration_ms
           for p in record.phases},
    }
    for env in record.environments:
        line[f"{env.name}/reward_mean"] = env.reward_mean
        line[f"{env.name}/pass_rate"] = env.pass_rate
        line[f"{env.name}/mean_response_tokens"] = env.mean_response_tokens
    if record.train_steps:
        line["train/step"] = record.train_steps[-1].step
        measured = [step for step in record.train_steps if step.trained_tokens]  # not applied_before_restart
        if measured:
            line["train/policy_loss"] = measured[-1].policy_loss
    return line


class RunDirectory:
    def __init__(self, root: Path, run_id: str) -> None:
        self.path = root / run_id
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: pb.RunConfig) -> None:
        data = json_format.MessageToDict(config, preserving_proto_field_name=True)
        (self.path / "config.yaml").write_text(yaml.safe_dump({"run": data}, sort_keys=False))

    def write_services_config(self, services: dict[str, Any]) -> Path:
        path = self.path / "services.yaml"
        path.write_text(yaml.safe_dump(services, sort_keys=False))
        return path

    def write_summary(self, summary: dict[str, Any]) -> None:
        (self.path / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    def append_metrics(self, line: dict[str, Any]) -> None:
        with (self.path / "metrics.jsonl").open("a") as out:
            out.write(json.dumps(line) + "\n")

    def plot_rewards(self) -> Path | None:
        """reward_curve.png of every ``*/reward_mean`` series; None before any iteration."""
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return None
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure, axes = plt.subplots(figsize=(6, 3.5))
        for key in sorted({k for line in lines for k in line if k.endswith("/reward_mean")}):
            points = [(line["iteration"], line[key]) for line in lines if key in line]
            axes.plot(*zip(*points, strict=True), marker="o", label=key.removesuffix("/reward_mean"))
        axes.set_xlabel("iteration")
        axes.set_ylabel("reward mean")
        axes.legend()
        figure.tight_layout()
        out = self.path / "reward_curve.png"
        figure.savefig(out, dpi=100)
        plt.close(figure)
        return out
