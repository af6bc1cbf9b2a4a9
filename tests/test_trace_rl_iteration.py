"""One RL iteration through all six services, each a real process on loopback: the
iteration is one trace across them, and the trainer and controller export what it did.

The test starts controller, inference, trainer, checkpoint engine (+ one engine worker),
judge and sandbox (``LocalCluster``), every service writing its finished spans to a
JSON-lines file (``trace_file``; the engine worker reads checkpoint_engine's settings, so
it appends to that service's file), and runs ``k2rl run --no-start-services`` against them:
the trainer's weights are published to inference, then one iteration of a code
environment runs: the controller generates on inference, the judge scores each response
by running it in the sandbox, the trainer trains and publishes weights through the
checkpoint engine. A real Prometheus scrapes the six services meanwhile. Then the tests
check the controller's and the trainer's /metrics against what the run recorded, evaluate
every dashboard panel over RL series (``rl=True`` in deploy/grafana/generate.py) through
Prometheus, and read the six span files.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from k2rl.controller.deployment import EngineWorkers
from k2rl.core.config import SERVICE_NAMES
from k2rl.core.launcher import LocalCluster
from k2rl.core.net import free_loopback_ports
from k2rl.core.testing import PrometheusServer, has_finite_value, require_binary

ROOT = Path(__file__).resolve().parents[1]

CODE_TASKS = [
    {"id": "echo", "prompt": "Print the input.", "tests": [{"stdin": "7\n", "expected_stdout": "7\n"}]},
    {"id": "double", "prompt": "Print twice the input.", "tests": [{"stdin": "4\n", "expected_stdout": "8\n"}]},
]
RUN = {
    "model_preset": "k2-nano",
    "iterations": 1,
    "prompts_per_iteration": 2,
    "samples_per_prompt": 2,
    "train_steps_per_iteration": 1,
    "seed": 3,
    "environments": [{"name": "code", "weight": 1.0, "token_budget": 6}],
    "ptx_sequences_per_step": 2,  # a PTX loss term, so the step has a gradient even if every reward ties
    "rl_loss": {"tau": 0.1, "ptx_weight": 0.1},
}


def _dashboards() -> ModuleType:
    """deploy/grafana/generate.py, which defines the dashboards' panels."""
    spec = importlib.util.spec_from_file_location("k2rl_grafana_dashboards", ROOT / "deploy" / "grafana" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


RL_PANELS = [(board.uid, panel) for board in _dashboards().DASHBOARDS for panel in board.panels if panel.rl]
PTX_DOCUMENTS = ["print(1 + 1)", "x = 3\nprint(x * 2)", "print('hello')"]


@dataclass(frozen=True)
class IterationResult:
    spans: list[dict]
    metrics: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]  # service -> sample -> value
    line: dict  # the iteration's metrics.jsonl line, as `k2rl run` recorded it from the controller
    summary: dict  # runs/<id>/summary.json
    panels: dict[tuple[str, str], list[dict]]  # (dashboard uid, title) of each rl panel -> its query results


def _services_config(tmp_path: Path) -> Path:
    ports = iter(free_loopback_ports(2 * len(SERVICE_NAMES)))
    services: dict[str, object] = {
        name: {"port": next(ports), "metrics_port": next(ports),
               "trace_file": str(tmp_path / "spans" / f"{name}.jsonl")}
        for name in SERVICE_NAMES}
    services["inference"].update(checkpoint_engine_replica=True, http_port=-1)  # type: ignore[attr-defined]
    services["trainer"].update(device="cpu", checkpoint_dir=str(tmp_path / "checkpoints"))  # type: ignore[attr-defined]
    services["state_url"] = f"sqlite:///{tmp_path}/state.db"
    path = tmp_path / "services.yaml"
    path.write_text(yaml.safe_dump(services))
    return path


def _experiment(tmp_path: Path) -> Path:
    dataset = tmp_path / "code.jsonl"
    dataset.write_text("".join(json.dumps(task) + "\n" for task in CODE_TASKS))
    ptx = tmp_path / "ptx.txt"
    ptx.write_text("\n".join(PTX_DOCUMENTS) + "\n")
    run = {**RUN, "environments": [{**RUN["environments"][0], "dataset": str(dataset)}],  # type: ignore[index]
           "ptx_dataset": str(ptx)}
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump({"startup_timeout_s": 120, "run": run}))
    return path


def _scrape(cluster: LocalCluster, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    port = cluster.settings[name].prometheus_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.fixture(scope="module")
def iteration(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IterationResult]:
    require_binary("bwrap", "bubblewrap")  # the sandbox's isolation
    tmp_path = tmp_path_factory.mktemp("traced")
    services_file = _services_config(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K2RL_", "OTEL_"))}
    cluster = LocalCluster(SERVICE_NAMES, services_file, log_dir=tmp_path / "logs",
                           extra_env={"K2RL_STATE_DIR": str(tmp_path)})
    workers = EngineWorkers()
    targets = [f"127.0.0.1:{cluster.settings[name].prometheus_port}" for name in SERVICE_NAMES]
    cluster.start()
    try:
        with PrometheusServer(tmp_path / "prometheus", targets) as prometheus:
            cluster.wait_until_serving(120)
            workers.start(cluster.settings["checkpoint_engine"].address, 1, services_file, tmp_path / "logs")
            result = subprocess.run(
                [sys.executable, "-m", "k2rl.core.cli", "run", "--no-start-services", "--services-config",
                 str(services_file), "--runs-dir", str(tmp_path / "runs"), "--run-id", "traced",
                 str(_experiment(tmp_path))],
                cwd=tmp_path, capture_output=True, text=True, timeout=300,
                env={**env, "COLUMNS": "200", "K2RL_DEPENDENCIES": json.dumps(cluster.dependency_addresses())})
            assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
            metrics = {name: _scrape(cluster, name) for name in ("controller", "trainer")}
            prometheus.wait_until_all_targets_up(30)
            time.sleep(3)  # a few 1 s scrapes after the iteration was recorded
            panels = {(uid, panel.title): [prometheus.query(query.expr) for query in panel.queries]
                      for uid, panel in RL_PANELS}
    finally:
        workers.stop()
        cluster.stop()
    run_dir = tmp_path / "runs" / "traced"
    (line,) = [json.loads(text) for text in (run_dir / "metrics.jsonl").read_text().splitlines()]
    yield IterationResult(_read_spans(tmp_path / "spans"), metrics, line,
                          json.loads((run_dir / "summary.json").read_text()), panels)


def _read_spans(directory: Path) -> list[dict]:
    return [json.loads(line) for path in sorted(directory.glob("*.jsonl"))
            for line in path.read_text().splitlines() if line.strip()]


def _service(span: dict) -> str:
    return str(span["service"]).removeprefix("k2rl-")


def _ancestors(span: dict, by_id: dict[str, dict]) -> list[dict]:
    chain = []
    while span["parent_span_id"] is not None:
        span = by_id[span["parent_span_id"]]
        chain.append(span)
    return chain


def _server_spans(spans: list[dict], service: str, method: str) -> list[dict]:
    return [s for s in spans if s["kind"] == "SERVER" and _service(s) == service and s["name"].endswith(method)]


@pytest.mark.slow
def test_one_rl_iteration_is_one_trace_across_all_six_services(iteration: IterationResult) -> None:
    spans = iteration.spans
    (root,) = [s for s in spans if s["name"] == "rl.iteration"]
    assert root["parent_span_id"] is None and _service(root) == "controller"
    assert root["attributes"]["k2rl.run_id"] == "traced" and root["attributes"]["k2rl.iteration"] == 0
    trace = [s for s in spans if s["trace_id"] == root["trace_id"]]
    by_id = {s["span_id"]: s for s in trace}

    # one tree: every span but the root has its parent in the same trace, across processes
    orphans = [s["name"] for s in trace if s is not root and s["parent_span_id"] not in by_id]
    assert not orphans, orphans
    assert {_service(s) for s in trace} == {*SERVICE_NAMES, "checkpoint_engine_worker"}
    assert all(root in _ancestors(s, by_id) for s in trace if s is not root)

    phases = {s["name"]: s for s in trace if s["parent_span_id"] == root["span_id"]}
    for phase in ("inference_wake", "rollout", "inference_sleep", "trainer_onload", "train", "trainer_offload",
                  "weight_update"):
        assert f"rl.phase.{phase}" in phases, sorted(phases)

    def called_from(server: dict, client_service: str) -> dict:
        """The server span's parent: the CLIENT span of ``client_service`` that made the call."""
        parent = by_id[server["parent_span_id"]]
        assert parent["kind"] == "CLIENT" and _service(parent) == client_service, (server, parent)
        assert parent["name"] == server["name"]
        return parent

    def phase_of(span: dict) -> str:
        return next(a["name"] for a in _ancestors(span, by_id) if a["parent_span_id"] == root["span_id"])

    generates = _server_spans(trace, "inference", "/Generate")
    assert len(generates) >= 4  # 2 prompts x 2 samples, each its own stream
    assert all(phase_of(called_from(g, "controller")) == "rl.phase.rollout" for g in generates)

    scores = _server_spans(trace, "judge", "/Score")
    assert len(scores) == 4 and all(phase_of(called_from(s, "controller")) == "rl.phase.rollout" for s in scores)
    executions = _server_spans(trace, "sandbox", "/Execute")
    assert len(executions) == 4
    judge_spans = {s["span_id"] for s in scores}
    for execution in executions:  # judge -> sandbox from the judge's scoring pool, still under Score
        assert judge_spans & {a["span_id"] for a in _ancestors(called_from(execution, "judge"), by_id)}

    (train_step,) = _server_spans(trace, "trainer", "/TrainStep")
    assert phase_of(called_from(train_step, "controller")) == "rl.phase.train"
    (publish_weights,) = _server_spans(trace, "trainer", "/PublishWeights")
    assert phase_of(called_from(publish_weights, "controller")) == "rl.phase.weight_update"
    (publish_version,) = _server_spans(trace, "checkpoint_engine", "/PublishVersion")
    assert publish_weights in _ancestors(called_from(publish_version, "trainer"), by_id)
    waits = [w for w in _server_spans(trace, "checkpoint_engine", "/WaitForVersion")
             if _service(by_id[w["parent_span_id"]]) == "controller"]  # the trainer waits for gathering, too
    assert waits and all(phase_of(called_from(w, "controller")) == "rl.phase.weight_update" for w in waits)

    # the engine worker picks the version up by polling the coordinator; the plan carries the
    # publish's traceparent, so the worker's spans and its pushes to the replica hang under it
    (update,) = [s for s in trace if s["name"] == "engine_worker.update"]
    assert _service(update) == "checkpoint_engine_worker" and update["parent_span_id"] == publish_version["span_id"]
    assert update["attributes"]["k2rl.weight_version"] == iteration.line["new_weight_version"]
    steps = {s["name"]: s for s in trace if s["parent_span_id"] == update["span_id"]}
    assert {"engine_worker.gather", "engine_worker.broadcast", "engine_worker.commit"} <= steps.keys(), sorted(steps)
    (reload,) = _server_spans(trace, "inference", "/UpdateWeights")
    push = called_from(reload, "checkpoint_engine_worker")
    assert update in _ancestors(push, by_id)
    progress = [s for s in _server_spans(trace, "checkpoint_engine", "/ReportVersionProgress")
                if update in _ancestors(called_from(s, "checkpoint_engine_worker"), by_id)]
    assert len(progress) == 2  # DISTRIBUTING, then COMPLETE

    counts = defaultdict(int)
    for span in trace:
        counts[_service(span)] += 1
    print(f"\ntrace {root['trace_id']}: {len(trace)} spans, by service {dict(sorted(counts.items()))}")


def _value(samples: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    assert key in samples, f"{name}{labels} not exported; have {sorted(n for n, _ in samples if n.startswith('k2rl_'))}"
    return samples[key]


@pytest.mark.slow
def test_trainer_exports_what_its_steps_and_memory_moves_did(iteration: IterationResult) -> None:
    trainer, line = iteration.metrics["trainer"], iteration.line
    assert _value(trainer, "k2rl_trainer_step") == line["train/step"]
    assert _value(trainer, "k2rl_trainer_loss", part="policy") == pytest.approx(line["train/policy_loss"])
    assert _value(trainer, "k2rl_trainer_steps_total", loss_kind="rl_k15") == 1
    assert _value(trainer, "k2rl_trainer_step_seconds_count", loss_kind="rl_k15") == 1
    assert _value(trainer, "k2rl_trainer_step_seconds_sum", loss_kind="rl_k15") > 0
    assert _value(trainer, "k2rl_trainer_learning_rate") > 0
    assert _value(trainer, "k2rl_trainer_grad_norm") > 0
    assert _value(trainer, "k2rl_trainer_loss", part="ptx") > 0  # PTX documents under random weights
    assert _value(trainer, "k2rl_trainer_tokens_per_second") > 0
    assert _value(trainer, "k2rl_trainer_trained_tokens_total") > 0
    # k2-nano's attention records its logits: one S_max per layer, the largest is the global one
    per_layer = {dict(labels)["layer"]: value for (name, labels), value in trainer.items()
                 if name == "k2rl_trainer_qk_clip_layer_max_logit"}
    assert per_layer and _value(trainer, "k2rl_trainer_qk_clip_max_logit") == pytest.approx(max(per_layer.values()))
    assert _value(trainer, "k2rl_trainer_qk_clip_clipped_heads") >= 0
    # the iteration onloads once and offloads once (colocated mode); two publishes (initial + iteration)
    for direction in ("onload", "offload"):
        assert _value(trainer, "k2rl_trainer_memory_move_seconds_count", direction=direction) == 1
    assert _value(trainer, "k2rl_trainer_memory_moved_bytes_total", direction="offload") > 0
    assert _value(trainer, "k2rl_trainer_publish_seconds_count") == 2


@pytest.mark.slow
def test_controller_exports_the_iteration_it_recorded(iteration: IterationResult) -> None:
    controller, line, summary = iteration.metrics["controller"], iteration.line, iteration.summary
    (recorded,) = summary["iterations"]
    assert _value(controller, "k2rl_controller_iteration") == summary["completed_iterations"] == 1
    assert _value(controller, "k2rl_controller_iterations_total") == 1
    assert _value(controller, "k2rl_controller_iteration_seconds_count") == 1
    assert _value(controller, "k2rl_controller_iteration_seconds_sum") == pytest.approx(recorded["seconds"])
    for phase, seconds in recorded["phase_seconds"].items():
        assert _value(controller, "k2rl_controller_phase_seconds_count", phase=phase) == 1
        assert _value(controller, "k2rl_controller_phase_seconds_sum", phase=phase) == pytest.approx(seconds, abs=1e-3)
    assert _value(controller, "k2rl_controller_reward_mean", environment="code") == pytest.approx(line["code/reward_mean"])
    assert _value(controller, "k2rl_controller_pass_rate", environment="code") == pytest.approx(line["code/pass_rate"])
    assert _value(controller, "k2rl_controller_reward_std", environment="code") >= 0
    generated = int(line["rollout/generated_tokens"])  # uint64: a string in proto JSON
    assert _value(controller, "k2rl_controller_generated_tokens_total") == generated > 0
    assert _value(controller, "k2rl_controller_rollout_tokens_per_second") == pytest.approx(
        line["rollout/generation_tokens_per_second"])
    assert _value(controller, "k2rl_controller_weight_version") == summary["weight_version"] == line["new_weight_version"]
    assert _value(controller, "k2rl_controller_weight_version_lag") == (
        line["new_weight_version"] - line["rollout_weight_version"])
    assert _value(controller, "k2rl_controller_partial_rollouts_buffered") == line["rollout/trajectories_paused"]
    assert _value(controller, "k2rl_controller_trajectories_total", outcome="finished") == (
        line["rollout/trajectories_finished"])


@pytest.mark.slow
def test_every_rl_dashboard_panel_returns_data_after_an_iteration(iteration: IterationResult) -> None:
    assert len(iteration.panels) >= 15  # the RL overview and trainer panels of deploy/grafana
    failed = {key: [r.get("error") for r in results if r.get("status") != "success"]
              for key, results in iteration.panels.items()}
    assert not {key: errors for key, errors in failed.items() if errors}
    empty = [key for key, results in iteration.panels.items() if not all(has_finite_value(r) for r in results)]
    assert not empty, f"RL panels with a query that returned no finite value: {empty}"
    print(f"\nRL dashboard panels: {len(iteration.panels)}, all returned data")
