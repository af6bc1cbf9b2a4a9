"""What ``k2rl run`` writes under runs/<id>/: the config, metrics.jsonl and a reward curve."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format

from k2rl.controller.v1 import controller_pb2 as pb


def load_experiment(path: Path) -> tuple[pb.RunConfig, dict[str, Any]]:
    """``run:`` (a RunConfig in proto JSON field names) and the rest of an experiment YAML."""
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or "run" not in data:
        raise ValueError(f"{path}: expected a mapping with a 'run:' section (a RunConfig)")
    config = json_format.ParseDict(data.pop("run"), pb.RunConfig())
    return config, data


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
        line["train/policy_loss"] = record.train_steps[-1].policy_loss
        line["train/step"] = record.train_steps[-1].step
    return line


class RunDirectory:
    def __init__(self, root: Path, run_id: str) -> None:
        self.path = root / run_id
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, config: pb.RunConfig) -> None:
        data = json_format.MessageToDict(config, preserving_proto_field_name=True)
        (self.path / "config.yaml").write_text(yaml.safe_dump({"run": data}, sort_keys=False))

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
