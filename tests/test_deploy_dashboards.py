"""Grafana dashboards and Prometheus rules in deploy/, checked against real tools.

- the checked-in dashboard JSON is what deploy/grafana/generate.py produces;
- every metric a panel or alert names is registered somewhere in the code;
- `promtool check rules` and the rule unit tests (`promtool test rules`) pass;
- a real Prometheus scrapes the six services (LocalCluster, loopback, free ports, the rules
  loaded) while deploy/compose/e2e.py -- the compose `test` profile's job -- runs against
  them twice (controller GetSystemStatus, a code reward judge -> sandbox, an inference
  generation, Prometheus targets); every panel query must parse and every core panel must
  return a finite value. The number of panels with data is printed (pytest -s).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from k2rl.core.config import SERVICE_NAMES
from k2rl.core.launcher import LocalCluster
from k2rl.core.testing import PrometheusServer, has_finite_value, require_binary

ROOT = Path(__file__).resolve().parents[1]
GRAFANA = ROOT / "deploy" / "grafana"
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"
E2E_JOB = ROOT / "deploy" / "compose" / "e2e.py"
RATE_WINDOW = "30s"  # stands in for Grafana's $__rate_interval; scrapes are 1 s apart


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("k2rl_grafana_generate", GRAFANA / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


GEN = _generator()
PANELS = [(d.uid, p) for d in GEN.DASHBOARDS for p in d.panels]


def _exprs(panel: object) -> list[str]:
    return [query.expr.replace("$__rate_interval", RATE_WINDOW) for query in panel.queries]  # type: ignore[attr-defined]


def test_checked_in_dashboards_are_generated() -> None:
    result = subprocess.run([sys.executable, str(GRAFANA / "generate.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for path in (GRAFANA / "dashboards").glob("*.json"):
        board = json.loads(path.read_text())
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids)), path
        for panel in board["panels"]:
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), (path, panel["title"])
            assert panel["datasource"]["uid"] == "${datasource}"


def _metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\bk2rl_[a-z0-9_]+", expr))


def _source_text() -> str:
    files = [*ROOT.glob("libs/*/src/**/*.py"), *ROOT.glob("services/*/src/**/*.py")]
    return "\n".join(path.read_text(errors="replace") for path in files)


def test_every_metric_named_in_panels_and_alerts_is_registered_in_the_code() -> None:
    source = _source_text()
    named = {name for _, panel in PANELS for expr in _exprs(panel) for name in _metric_names(expr)}
    named |= _metric_names(RULES.read_text())
    missing = []
    for name in sorted(named):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        candidates = {base, base.removesuffix("_total")}
        if not any(f'"{candidate}"' in source for candidate in candidates):
            missing.append(name)
    assert not missing, f"series not registered by any service: {missing}"


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = require_binary("promtool", "prometheus")
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    unit = subprocess.run([promtool, "test", "rules", RULE_TESTS.name], capture_output=True, text=True,
                          timeout=60, cwd=RULE_TESTS.parent)
    assert unit.returncode == 0, unit.stdout + unit.stderr
    alerts = {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert alerts <= tested, f"alerts without a unit test: {alerts - tested}"
    for required in ("K2rlServiceDown", "K2rlIterationStalled", "K2rlWeightUpdateSlow", "K2rlSandboxQueueSaturated"):
        assert required in alerts


# --- real Prometheus over real services ---------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, PrometheusServer]]:
    workdir = tmp_path_factory.mktemp("prom")
    cluster = LocalCluster(SERVICE_NAMES, free_ports=True, log_dir=workdir / "logs")
    targets = [f"127.0.0.1:{cluster.settings[name].prometheus_port}" for name in SERVICE_NAMES]
    cluster.start()
    try:
        with PrometheusServer(workdir, targets, rule_files=[RULES]) as prometheus:
            cluster.wait_until_serving(120)
            prometheus.wait_until_all_targets_up(60)
            yield cluster, prometheus
    finally:
        cluster.stop()


def _run_e2e_job(cluster: LocalCluster, prometheus: PrometheusServer) -> dict:
    """deploy/compose/e2e.py (the compose `test` profile's job) against the local processes:
    health, controller GetSystemStatus, a code reward judge -> sandbox, one generation,
    Prometheus targets. It is also the traffic the dashboards are evaluated over."""
    env = {**os.environ, "K2RL_DEPENDENCIES": json.dumps(cluster.dependency_addresses())}
    result = subprocess.run([sys.executable, str(E2E_JOB), "--prometheus", prometheus.base_url, "--timeout", "60"],
                            capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_panel_parses_and_core_panels_return_data(stack: tuple[LocalCluster, PrometheusServer]) -> None:
    cluster, prometheus = stack
    # Twice, scrapes apart: a labelled series is born at its first observation, and rate()
    # sees an increase only between two scrapes that both hold the series.
    _run_e2e_job(cluster, prometheus)
    time.sleep(3)
    report = _run_e2e_job(cluster, prometheus)
    assert report["ok"] and report["code_reward"] == 1.0 and report["prometheus_targets_up"] == len(SERVICE_NAMES)
    assert report["controller_sees_serving"] == len(SERVICE_NAMES)
    time.sleep(4)  # a few 1 s scrapes after the traffic, well inside the 30 s rate window

    parse_errors, core_empty, with_data = [], [], []
    for uid, panel in PANELS:
        results = [prometheus.query(expr) for expr in _exprs(panel)]
        for expr, result in zip(_exprs(panel), results, strict=True):
            if result.get("status") != "success":
                parse_errors.append(f"{uid} / {panel.title}: {result.get('error')} in {expr}")
        if any(has_finite_value(r) for r in results):
            with_data.append((uid, panel.title))
        elif panel.core:
            core_empty.append(f"{uid} / {panel.title}: {_exprs(panel)}")

    core_total = sum(panel.core for _, panel in PANELS)
    print(f"\ndashboard panels: {len(PANELS)} total, {len(with_data)} returned data, "
          f"{core_total} core (all must return data)")
    for uid, panel in PANELS:
        if (uid, panel.title) not in with_data:
            print(f"  no data: {uid} / {panel.title}")
    assert not parse_errors, "\n".join(parse_errors)
    assert not core_empty, "core panels without data:\n" + "\n".join(core_empty)


@pytest.mark.slow
def test_prometheus_loads_the_alert_rules_and_none_fires_on_a_healthy_stack(
        stack: tuple[LocalCluster, PrometheusServer]) -> None:
    _, prometheus = stack
    groups = prometheus.get("/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"] for group in groups for rule in group["rules"]}
    assert {"K2rlServiceDown", "K2rlServiceNotServing", "K2rlSandboxQueueSaturated"} <= loaded
    for group in groups:
        for rule in group["rules"]:
            assert rule["health"] == "ok", rule
    firing = [a for a in prometheus.get("/api/v1/alerts")["data"]["alerts"] if a["state"] == "firing"]
    assert not firing, firing


def _exported_series(metrics_text: str) -> set[str]:
    """Every series name a /metrics page can carry, from its families (``# TYPE`` lines
    included, so a labelled family that has seen no observation yet still counts)."""
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
                "summary": ("_sum", "_count", "_created"), "gauge": ("",), "info": ("_info",)}
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


@pytest.mark.slow
def test_every_series_a_panel_or_alert_names_is_on_a_running_services_metrics_page(
        stack: tuple[LocalCluster, PrometheusServer]) -> None:
    cluster, _ = stack
    exported = set().union(*(_exported_series(cluster.scrape_metrics(name)) for name in SERVICE_NAMES))
    named = {name for _, panel in PANELS for expr in _exprs(panel) for name in _metric_names(expr)}
    named |= _metric_names(RULES.read_text())
    named |= {name for _, panel in PANELS for expr in _exprs(panel) for name in re.findall(r"\bprocess_[a-z_]+", expr)}
    assert not named - exported, f"named in a panel or alert but exported by no service: {sorted(named - exported)}"
