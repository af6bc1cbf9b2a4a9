"""Test helpers: required system programs, and services run in-process on free ports.

For system programs (redis-server, bazel, promtool, bwrap): locally a missing program skips the test with a message saying how to get it; under CI
(``CI=true``) it fails instead, because CI installs everything and a skip there would hide
a broken install step.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from k2rl.core.client import ClientOptions
from k2rl.core.config import load_settings
from k2rl.core.health import list_served_services, probe_health
from k2rl.core.net import free_loopback_port
from k2rl.core.server import ServiceRuntime, ServiceSpec

__all__ = [
    "assert_serves_contract", "free_loopback_port", "require_binary", "running_in_ci", "serve_in_process",
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
