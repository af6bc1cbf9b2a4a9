"""``k2rl up``: every service as its own process on loopback, supervised together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from k2rl.core.client import ClientOptions
from k2rl.core.config import SERVICE_NAMES, ServiceSettings, default_dependencies
from k2rl.core.health import HealthProbe, probe_health, wait_until_serving
from k2rl.core.net import free_loopback_ports
from k2rl.core.server import load_service_settings


@dataclass
class LaunchedService:
    """One child process and where it listens."""

    name: str
    settings: ServiceSettings
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def address(self) -> str:
        return self.settings.address

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class ServiceExited(RuntimeError):
    """A child service died before or while it should have been serving."""


class LocalCluster:
    """Starts, probes and stops a set of services as separate processes on one machine."""

    def __init__(
        self,
        services: tuple[str, ...] = SERVICE_NAMES,
        config_file: Path | None = None,
        free_ports: bool = False,
        log_dir: Path = Path(".k2rl/logs"),
        extra_env: dict[str, str] | None = None,
    ) -> None:
        unknown = set(services) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
        self.services = services
        self.config_file = config_file
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        ports = iter(free_loopback_ports(2 * len(services))) if free_ports else None
        self.settings = {name: self._settings_for(name, ports) for name in services}
        self.launched: dict[str, LaunchedService] = {}

    def _settings_for(self, name: str, ports: Iterator[int] | None) -> ServiceSettings:
        """The service's own settings type, so service-specific config keys are accepted."""
        overrides = {"port": next(ports), "metrics_port": next(ports)} if ports else {}
        return load_service_settings(name, self.config_file, overrides)

    def dependency_addresses(self) -> dict[str, str]:
        """Where each service finds the others: the launched ones, defaults for the rest."""
        launched = {name: settings.address for name, settings in self.settings.items()}
        return {**default_dependencies(), **launched}

    def client_options(self) -> ClientOptions:
        any_settings = next(iter(self.settings.values()))
        return ClientOptions.from_settings(any_settings)

    def start(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.extra_env, "K2RL_DEPENDENCIES": json.dumps(self.dependency_addresses())}
        for name, settings in self.settings.items():
            command = [sys.executable, "-m", "k2rl.core.cli", "serve", name,
                       "--port", str(settings.grpc_port), "--metrics-port", str(settings.prometheus_port)]
            if self.config_file is not None:
                command += ["--config", str(self.config_file)]
            log_path = self.log_dir / f"{name}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
            self.launched[name] = LaunchedService(name, settings, process, log_path)

    def wait_until_serving(self, timeout_s: float = 60.0) -> list[HealthProbe]:
        """Block until every service is SERVING; raise ServiceExited if one dies first."""
        deadline = time.monotonic() + timeout_s
        probes = []
        for service in self.launched.values():
            while True:
                self._raise_if_exited(service)
                remaining = deadline - time.monotonic()
                probe = wait_until_serving(service.name, service.address, min(1.0, max(remaining, 0)),
                                           self.client_options())
                if probe.serving:
                    probes.append(probe)
                    break
                if remaining <= 0:
                    raise TimeoutError(f"{service.name} not serving after {timeout_s:.0f}s "
                                       f"({probe.status}: {probe.error})\n{service.log_tail()}")
        return probes

    def _raise_if_exited(self, service: LaunchedService) -> None:
        code = service.process.poll()
        if code is not None:
            raise ServiceExited(f"{service.name} exited with code {code}; last log lines:\n{service.log_tail()}")

    def first_exited(self) -> LaunchedService | None:
        return next((s for s in self.launched.values() if s.process.poll() is not None), None)

    def probe_all(self) -> list[HealthProbe]:
        return [probe_health(s.name, s.address, self.client_options()) for s in self.launched.values()]

    def scrape_metrics(self, name: str, timeout_s: float = 5.0) -> str:
        settings = self.settings[name]
        url = f"http://{settings.metrics_host}:{settings.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode()

    def stop(self, timeout_s: float = 20.0) -> dict[str, int]:
        """SIGTERM every child, wait for a graceful exit, SIGKILL what is left. Returns exit codes."""
        for service in self.launched.values():
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes = {}
        for service in self.launched.values():
            try:
                codes[service.name] = service.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(service.process.pid, signal.SIGKILL)
                codes[service.name] = service.process.wait()
        return codes
