"""Generate the Grafana dashboards in deploy/grafana/dashboards/ from the panel lists below.

    python deploy/grafana/generate.py          # rewrite the JSON files
    python deploy/grafana/generate.py --check  # exit 1 if a checked-in file differs

Every query uses only series the services export today (see the ``k2rl_*`` metric names in
libs/k2rl-core/src/k2rl/core/metrics.py and services/*/src); tests/test_deploy_dashboards.py
checks each name against the /metrics of the six running services. A panel the issue asks
for over a series that does not exist yet (inference sleep state) is deliberately absent
rather than drawn over an invented name.

``core=True`` marks panels that must return data in tests/test_deploy_dashboards.py, which
evaluates every query against a real Prometheus scraping the six services after a short
round of traffic; the other panels need traffic that test does not generate (engine-worker
weight updates, hack findings, pairwise comparisons) and only have to parse.
``rl=True`` marks panels over what an RL iteration records (controller iteration figures,
trainer steps): tests/test_trace_rl_iteration.py evaluates them against a real Prometheus
scraping the services through one RL iteration, and every one of them must return data.

Iterations are minutes apart, far more than Grafana's rate interval, so the RL panels show
the last iteration's gauges and means since start (``_sum / _count``) instead of rates.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"
RATE = "$__rate_interval"  # Grafana's variable; tests substitute a fixed window


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[Query, ...]
    unit: str = "short"
    description: str = ""
    kind: str = "timeseries"  # or "stat"
    core: bool = False
    rl: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    panels: tuple[Panel, ...]
    tags: tuple[str, ...] = field(default=("k2rl",))

    @property
    def filename(self) -> str:
        return f"{self.uid}.json"


def q(expr: str, legend: str = "") -> Query:
    return Query(" ".join(expr.split()), legend)


def quantile(metric: str, phi: float, by: str, where: str = "") -> str:
    selector = f"{{{where}}}" if where else ""
    return f"histogram_quantile({phi}, sum by (le, {by}) (rate({metric}_bucket{selector}[{RATE}])))"


def mean_since_start(metric: str, by: str = "") -> str:
    """Mean observation of a histogram since the process started (``by``: labels kept)."""
    if not by:
        return f"{metric}_sum / {metric}_count"
    return f"sum by ({by}) ({metric}_sum) / sum by ({by}) ({metric}_count)"


def rpc_panels(service: str) -> tuple[Panel, ...]:
    """Per-method RPC rate, errors and latency of one service (the standard series)."""
    sel = f'service="{service}"'
    return (
        Panel(f"{service} RPCs/s by method", (
            q(f"sum by (grpc_method) (rate(k2rl_grpc_server_handled_total{{{sel}}}[{RATE}]))", "{{grpc_method}}"),
        ), "reqps", core=True),
        Panel(f"{service} non-OK RPCs/s by method and code", (
            q(f'sum by (grpc_method, grpc_code) (rate(k2rl_grpc_server_handled_total{{{sel}, grpc_code!="OK"}}[{RATE}]))',
              "{{grpc_method}} {{grpc_code}}"),
        ), "reqps", "Empty while every RPC succeeds."),
        Panel(f"{service} RPC latency p95 by method", (
            q(quantile("k2rl_grpc_server_handling_seconds", 0.95, "grpc_method", sel), "{{grpc_method}}"),
        ), "s", core=True),
        # process_* series carry no service label; k2rl_service_info (1 per process) supplies it.
        Panel(f"{service} resident memory", (
            q(f"process_resident_memory_bytes * on (job, instance) group_left (service)"
              f" k2rl_service_info{{{sel}}}", "{{instance}}"),
        ), "bytes", "RSS of the serving process (rank 0 for a multi-rank trainer).", core=True),
        Panel(f"{service} CPU cores used", (
            q(f"rate(process_cpu_seconds_total[{RATE}]) * on (job, instance) group_left (service)"
              f" k2rl_service_info{{{sel}}}", "{{instance}}"),
        ), "short", "CPU seconds per second of the serving process.", core=True),
    )


OVERVIEW = Dashboard("k2rl-overview", "k2rl / RL overview",
                     "Health of every service, RPC traffic, weight versions and updates, environment pressure.", (
    Panel("Services serving", (q("k2rl_service_serving", "{{service}}"),),
          description="1 while grpc health reports SERVING.", kind="stat", core=True),
    Panel("RL iterations completed", (q("k2rl_controller_iteration", "iteration"),),
          description="Completed iterations of the run that recorded the last one.", kind="stat", rl=True),
    Panel("Iteration seconds by phase (mean since start)", (
        q(mean_since_start("k2rl_controller_phase_seconds", "phase"), "{{phase}}"),), "s",
          "Colocated iteration (K2 section 3.3.1): wake, rollout, scoring (overlaps rollout), sleep, onload, "
          "train, offload, weight update.", rl=True),
    Panel("Iteration seconds (mean since start)", (
        q(mean_since_start("k2rl_controller_iteration_seconds"), "iteration"),), "s", rl=True),
    Panel("Reward mean and std per environment (last iteration)", (
        q("k2rl_controller_reward_mean", "mean {{environment}}"),
        q("k2rl_controller_reward_std", "std {{environment}}"),), rl=True),
    Panel("Accuracy per environment (last iteration)", (q("k2rl_controller_pass_rate", "{{environment}}"),),
          "percentunit", "Fraction of the iteration's trajectories the verifier passed.", rl=True),
    Panel("Rollout tokens/s and mean response tokens", (
        q("k2rl_controller_rollout_tokens_per_second", "tokens/s (all replicas)"),
        q("k2rl_controller_mean_response_tokens", "response tokens {{environment}}"),), rl=True),
    Panel("Partial-rollout backlog", (q("k2rl_controller_partial_rollouts_buffered", "paused samples"),),
          description="Paused samples waiting to be resumed (K2 section 3.3.4 partial rollout).", rl=True),
    Panel("Weight version lag and stale tokens", (
        q("k2rl_controller_weight_version_lag", "versions rollout -> new weights"),
        q("k2rl_controller_stale_token_fraction", "stale token fraction"),),
          description="Versions between the weights the last rollout sampled from and the weights its "
                      "iteration produced; fraction of trained tokens sampled from an older version.", rl=True),
    Panel("Trajectories by outcome (total)", (
        q("sum by (outcome) (k2rl_controller_trajectories_total)", "{{outcome}}"),), rl=True),
    Panel("RPCs/s by service", (
        q(f"sum by (service) (rate(k2rl_grpc_server_handled_total[{RATE}]))", "{{service}}"),), "reqps", core=True),
    Panel("RPC error ratio by service", (
        q(f'(sum by (service) (rate(k2rl_grpc_server_handled_total{{grpc_code!="OK"}}[{RATE}]))'
          f" or 0 * sum by (service) (rate(k2rl_grpc_server_handled_total[{RATE}])))"
          f" / sum by (service) (rate(k2rl_grpc_server_handled_total[{RATE}]))", "{{service}}"),),
          "percentunit", "Non-OK RPCs / all RPCs; 0 when all succeed.", core=True),
    Panel("RPC latency p95 by service", (
        q(quantile("k2rl_grpc_server_handling_seconds", 0.95, "service"), "{{service}}"),), "s", core=True),
    Panel("RPCs in flight by service", (
        q("sum by (service) (k2rl_grpc_server_in_flight)", "{{service}}"),), core=True),
    Panel("Weight version per inference replica", (
        q("k2rl_inference_weight_version", "{{instance}}"),),
          description="Version each inference replica samples from.", core=True),
    Panel("Weight version completed per checkpoint-engine", (
        q("k2rl_checkpoint_engine_completed_version", "{{instance}}"),),
          description="Last version an engine worker finished broadcasting (appears after the first update)."),
    Panel("Weight update seconds by phase (mean per update)", (
        q(f"sum by (phase) (rate(k2rl_checkpoint_engine_phase_seconds_sum[{RATE}]))"
          f" / sum by (phase) (rate(k2rl_checkpoint_engine_phase_seconds_count[{RATE}]))", "{{phase}}"),), "s"),
    Panel("Weight update bandwidth", (
        q("k2rl_checkpoint_engine_bandwidth_bytes_per_second", "{{instance}}"),), "Bps",
          "Bytes / (gather + broadcast + reload wait) of the last update of each engine worker."),
    Panel("Sandbox queue depth and in-flight", (
        q("sum(k2rl_sandbox_queue_depth)", "queued"), q("sum(k2rl_sandbox_in_flight)", "running"),), core=True),
    Panel("Judge verdicts/s by outcome", (
        q(f"sum by (outcome) (rate(k2rl_judge_verdicts_total[{RATE}]))", "{{outcome}}"),), "ops", core=True),
    *rpc_panels("controller"),
))

TRAINER = Dashboard("k2rl-trainer", "k2rl / trainer",
                    "Optimizer steps (loss parts, grad norm, LR, QK-Clip, throughput), offload/onload, weight "
                    "publishing, RPCs and process resources.", (
    Panel("Optimizer step", (q("k2rl_trainer_step", "step"),), kind="stat", rl=True),
    Panel("Loss by part (last step)", (q("k2rl_trainer_loss", "{{part}}"),),
          description="total; lm (pretrain / SFT), policy (K1.5 RL) and ptx parts.", rl=True),
    Panel("Gradient norm", (q("k2rl_trainer_grad_norm", "grad norm"),), rl=True),
    Panel("Learning rate", (q("k2rl_trainer_learning_rate", "lr"),), rl=True),
    Panel("Max attention logit per layer (QK-Clip S_max)", (
        q("k2rl_trainer_qk_clip_layer_max_logit", "layer {{layer}}"),
        q("k2rl_trainer_qk_clip_max_logit", "max"),),
          description="QK-Clip rescales a head's W_q / W_k when its S_max exceeds tau.", rl=True),
    Panel("Heads clipped by QK-Clip", (
        q("k2rl_trainer_qk_clip_clipped_heads", "last step"),
        q("k2rl_trainer_qk_clip_head_rescales_total", "total"),), rl=True),
    Panel("Trained tokens/s and MFU", (
        q("k2rl_trainer_tokens_per_second", "tokens/s"), q("k2rl_trainer_mfu", "MFU"),),
          description="MFU is 0 where the device's peak FLOP/s is unknown (CPU).", rl=True),
    Panel("Step seconds by loss kind (mean since start)", (
        q(mean_since_start("k2rl_trainer_step_seconds", "loss_kind"), "{{loss_kind}}"),), "s", rl=True),
    Panel("Offload / onload seconds (mean since start)", (
        q(mean_since_start("k2rl_trainer_memory_move_seconds", "direction"), "{{direction}}"),), "s",
          "Colocated mode: the trainer's state leaves the GPU during rollout and returns for training.",
          rl=True),
    Panel("Bytes offloaded / onloaded (total)", (
        q("k2rl_trainer_memory_moved_bytes_total", "{{direction}}"),), "bytes", rl=True),
    Panel("PublishWeights seconds (mean since start)", (
        q(mean_since_start("k2rl_trainer_publish_seconds"), "publish"),), "s", rl=True),
    *rpc_panels("trainer"),
))

INFERENCE = Dashboard("k2rl-inference", "k2rl / inference", "Rollout engine: load, throughput, latency, caches.", (
    Panel("Running and waiting requests", (
        q("sum by (instance) (k2rl_inference_running_requests)", "running {{instance}}"),
        q("sum by (instance) (k2rl_inference_waiting_requests)", "waiting {{instance}}"),), core=True),
    Panel("Generation tokens/s", (
        q("k2rl_inference_generation_tokens_per_second", "{{instance}}"),), "short", core=True),
    Panel("Time to first token p50 / p95", (
        q(quantile("k2rl_inference_time_to_first_token_seconds", 0.5, "instance"), "p50 {{instance}}"),
        q(quantile("k2rl_inference_time_to_first_token_seconds", 0.95, "instance"), "p95 {{instance}}"),), "s",
          core=True),
    Panel("Time per output token p50 / p95", (
        q(quantile("k2rl_inference_time_per_output_token_seconds", 0.5, "instance"), "p50 {{instance}}"),
        q(quantile("k2rl_inference_time_per_output_token_seconds", 0.95, "instance"), "p95 {{instance}}"),), "s",
          core=True),
    Panel("KV-cache usage", (q("k2rl_inference_kv_cache_usage", "{{instance}}"),), "percentunit", core=True),
    Panel("Prefix-cache hit rate", (q("k2rl_inference_prefix_cache_hit_rate", "{{instance}}"),), "percentunit",
          "Prompt tokens served from the prefix cache / prompt tokens, since start.", core=True),
    Panel("Finished requests/s by finish reason", (
        q(f"sum by (finish_reason) (rate(k2rl_inference_requests_finished_total[{RATE}]))", "{{finish_reason}}"),),
          "reqps", core=True),
    Panel("Weight version", (q("k2rl_inference_weight_version", "{{instance}}"),), core=True),
    *rpc_panels("inference"),
))

CHECKPOINT_ENGINE = Dashboard("k2rl-checkpoint-engine", "k2rl / checkpoint engine",
                              "Weight broadcast trainer -> inference: per-phase timings, bytes, versions.", (
    Panel("Mean seconds per update by phase", (
        q(f"sum by (phase) (rate(k2rl_checkpoint_engine_phase_seconds_sum[{RATE}]))"
          f" / sum by (phase) (rate(k2rl_checkpoint_engine_phase_seconds_count[{RATE}]))", "{{phase}}"),), "s"),
    Panel("p95 seconds by phase", (
        q(quantile("k2rl_checkpoint_engine_phase_seconds", 0.95, "phase"), "{{phase}}"),), "s"),
    Panel("Bytes broadcast/s", (
        q(f"sum(rate(k2rl_checkpoint_engine_bytes_distributed_total[{RATE}]))", "bytes/s"),), "Bps", core=True),
    Panel("Bandwidth of the last update", (
        q("k2rl_checkpoint_engine_bandwidth_bytes_per_second", "{{instance}}"),), "Bps"),
    Panel("Completed version", (q("k2rl_checkpoint_engine_completed_version", "{{instance}}"),)),
    *rpc_panels("checkpoint_engine"),
))

SANDBOX = Dashboard("k2rl-sandbox", "k2rl / sandbox", "Isolated code execution pool.", (
    Panel("Queue depth", (q("sum by (instance) (k2rl_sandbox_queue_depth)", "{{instance}}"),), core=True),
    Panel("Executions in flight", (q("sum by (instance) (k2rl_sandbox_in_flight)", "{{instance}}"),), core=True),
    Panel("Executions/s by status", (
        q(f"sum by (status) (rate(k2rl_sandbox_executions_total[{RATE}]))", "{{status}}"),), "ops", core=True),
    Panel("Execution latency p50 / p95 by language", (
        q(quantile("k2rl_sandbox_execution_seconds", 0.5, "language"), "p50 {{language}}"),
        q(quantile("k2rl_sandbox_execution_seconds", 0.95, "language"), "p95 {{language}}"),), "s", core=True),
    Panel("Rejected (queue full)/s", (
        q(f"sum(rate(k2rl_sandbox_rejected_total[{RATE}]))", "rejected"),), "ops",
          "Executions refused with RESOURCE_EXHAUSTED because concurrency + max_queue was reached.", core=True),
    *rpc_panels("sandbox"),
))

JUDGE = Dashboard("k2rl-judge", "k2rl / judge", "Verifiable rewards, rubric critic, hack-check.", (
    Panel("Verifier latency p95", (
        q(quantile("k2rl_judge_verifier_seconds", 0.95, "verifier"), "{{verifier}}"),), "s", core=True),
    Panel("Verdicts/s by verifier and outcome", (
        q(f"sum by (verifier, outcome) (rate(k2rl_judge_verdicts_total[{RATE}]))", "{{verifier}} {{outcome}}"),),
          "ops", core=True),
    Panel("Hack-check findings/s by kind", (
        q(f"sum by (kind) (rate(k2rl_judge_hack_findings_total[{RATE}]))", "{{kind}}"),), "ops"),
    Panel("Pairwise comparisons/s by outcome", (
        q(f"sum by (outcome) (rate(k2rl_judge_comparisons_total[{RATE}]))", "{{outcome}}"),), "ops"),
    Panel("Critic position flip rate", (q("k2rl_judge_position_flip_rate", "{{instance}}"),), "percentunit",
          core=True),
    Panel("Critic unparseable replies and math-worker kills/s", (
        q(f"sum(rate(k2rl_judge_critic_unparseable_total[{RATE}]))", "critic unparseable"),
        q(f"sum(rate(k2rl_judge_math_worker_kills_total[{RATE}]))", "math worker kills"),), "ops", core=True),
    *rpc_panels("judge"),
))

DASHBOARDS: tuple[Dashboard, ...] = (OVERVIEW, TRAINER, INFERENCE, CHECKPOINT_ENGINE, SANDBOX, JUDGE)


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, object]:
    body: dict[str, object] = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [
            {"refId": chr(ord("A") + i), "expr": query.expr, "legendFormat": query.legend or "__auto",
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, query in enumerate(panel.queries)
        ],
    }
    if panel.kind == "stat":
        body["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                           "colorMode": "background", "graphMode": "none", "textMode": "value_and_name"}
        body["fieldConfig"] = {"defaults": {"unit": panel.unit, "mappings": [], "thresholds": {
            "mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 1}]}},
            "overrides": []}
    return body


def render(dashboard: Dashboard) -> dict[str, object]:
    panels = [_panel_json(p, i + 1, 12 * (i % 2), 8 * (i // 2)) for i, p in enumerate(dashboard.panels)]
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": list(dashboard.tags),
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "graphTooltip": 1,
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["k2rl"], "title": "k2rl", "asDropdown": True}],
        "templating": {"list": [{
            "name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {"selected": False, "text": "Prometheus", "value": "prometheus"}, "hide": 0,
        }]},
        "panels": panels,
    }


def rendered_files() -> dict[str, str]:
    return {d.filename: json.dumps(render(d), indent=2, sort_keys=True) + "\n" for d in DASHBOARDS}


def main(argv: list[str]) -> int:
    files = rendered_files()
    if "--check" in argv:
        stale = [name for name, text in files.items()
                 if not (DASHBOARD_DIR / name).is_file() or (DASHBOARD_DIR / name).read_text() != text]
        extra = sorted({p.name for p in DASHBOARD_DIR.glob("*.json")} - set(files))
        for name in stale:
            print(f"{DASHBOARD_DIR / name} is stale; run python deploy/grafana/generate.py", file=sys.stderr)
        for name in extra:
            print(f"{DASHBOARD_DIR / name} is not generated by deploy/grafana/generate.py", file=sys.stderr)
        return 1 if stale or extra else 0
    DASHBOARD_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (DASHBOARD_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
