"""Helpers for tests that need real system programs (redis-server, bazel, promtool, bwrap).

Locally a missing program skips the test with a message saying how to get it; under CI
(``CI=true``) it fails instead, because CI installs everything and a skip there would hide
a broken install step.
"""

from __future__ import annotations

import os
import shutil

import pytest

from k2rl.core.net import free_loopback_port

__all__ = ["free_loopback_port", "require_binary", "running_in_ci"]


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
