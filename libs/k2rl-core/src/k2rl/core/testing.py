"""Test helpers: required system programs, services run in-process on free ports, and a real
Prometheus scraping running services.

For system programs (redis-server, bazel, promtool, bwrap): locally a missing program skips the test with a message saying how to get it; under CI
(``CI=true``) it fails instead, because CI installs everything and a skip there would hide
a broken install step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from k2rl.core.client import ClientOptions
from k2rl.core.config import load_settings
from k2rl.core.health import list_served_services, probe_health
from k2rl.core.net import free_loopback_port
from k2rl.core.server import ServiceRuntime, ServiceSpec

__all__ = [
    "PrometheusServer", "assert_serves_contract", "free_loopback_port", "has_finite_value", "require_binary",
    "running_in_ci", "serve_in_process",
]


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(name: str, apt_package: str | None = None) -> str:
    """Return the absolute path of ``name`` or skip (locally) / fail (CI) the calling test."""
    path = shutil.which(name)
    if path:
        return path
    hint = f"install it with `apt-get install {apt_package or name}` (.ci/run does)"
    if running_in_ci():
        pytest.fail(f"{name} is required in CI but not on PATH; {hint}")
    pytest.skip(f"{name} not found on PATH; {hint}")


@contextmanager
def serve_in_process(spec: ServiceSpec, **overrides: Any) -> Iterator[ServiceRuntime]:
    """Run ``spec`` on free loopback ports inside the test process; stop it afterwards."""
    settings = load_settings(spec.settings_type, spec.name, None, {
        "port": free_loopback_port(), "metrics_port": free_loopback_port(), "grace_period_s": 0.5,
        **overrides,
    })
    runtime = ServiceRuntime(spec, settings)
    runtime.start()
    try:
        yield runtime
    finally:
        runtime.stop(0)


def assert_serves_contract(runtime: ServiceRuntime, grpc_service: str) -> None:
    """The runtime answers health SERVING for ``grpc_service`` and exposes it by reflection."""
    options = ClientOptions(token=runtime.settings.token())
    probe = probe_health(runtime.spec.name, runtime.settings.address, options, grpc_service=grpc_service)
    assert probe.serving, probe
    assert grpc_service in list_served_services(runtime.settings.address, options)


class PrometheusServer:
    """Debian's ``prometheus`` on a free loopback port, scraping ``targets`` (host:port of
    /metrics endpoints) every second with the scrape convention of deploy/compose/prometheus.yml
    (job "k2rl", honor_labels) and loading ``rule_files``. Use as a context manager."""

    def __init__(self, workdir: Path, targets: Sequence[str], rule_files: Sequence[Path] = ()) -> None:
        self.binary = require_binary("prometheus", "prometheus")
        self.workdir = workdir
        self.targets = list(targets)
        self.port = free_loopback_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(path) for path in rule_files],
                  "scrape_configs": [{"job_name": "k2rl", "honor_labels": True,
                                      "static_configs": [{"targets": self.targets}]}]}
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PrometheusServer:
        log = (self.workdir / "prometheus.log").open("wb")
        self._process = subprocess.Popen(
            [self.binary, f"--config.file={self.workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._process is not None
        self._process.terminate()
        try:
            self._process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def get(self, path: str, **params: str) -> dict:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:  # 400 carries the parse error as JSON
            return json.loads(error.read())

    def query(self, expr: str) -> dict:
        return self.get("/api/v1/query", query=expr)

    def wait_until_all_targets_up(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not self._all_targets_up():
            if time.monotonic() > deadline:
                log = self.workdir / "prometheus.log"
                tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise AssertionError(f"Prometheus never saw all {len(self.targets)} targets up\n{tail}")
            time.sleep(0.5)

    def _all_targets_up(self) -> bool:
        try:
            values = self.query('sum(up{job="k2rl"})').get("data", {}).get("result", [])
        except (urllib.error.URLError, OSError):
            return False
        return bool(values) and float(values[0]["value"][1]) == len(self.targets)


def has_finite_value(result: dict) -> bool:
    """Whether a Prometheus instant-query result holds at least one finite sample."""
    return any(math.isfinite(float(series["value"][1])) for series in result.get("data", {}).get("result", []))
