"""``k2rl up``: every service as its own process on loopback, supervised together.

``LocalCluster(in_process=True)`` serves the same services, settings and ports from this
one process instead (each its own ``ServiceRuntime``, still talking gRPC over loopback):
the baseline that measures what separate processes cost (bench/rl_iteration.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from k2rl.core.client import ClientOptions
from k2rl.core.config import SERVICE_NAMES, ServiceSettings, default_dependencies
from k2rl.core.health import HealthProbe, probe_health, wait_until_serving
from k2rl.core.net import free_loopback_ports
from k2rl.core.server import ServiceRuntime, load_service, load_service_settings


@dataclass
class LaunchedService:
    """One started service and where it listens: a child process, or a runtime in this process."""

    name: str
    settings: ServiceSettings
    process: subprocess.Popen[bytes] | None
    log_path: Path
    runtime: ServiceRuntime | None = None

    def exit_code(self) -> int | None:
        """None while it runs; a runtime in this process runs until ``LocalCluster.stop``."""
        return self.process.poll() if self.process is not None else None

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
    """Starts, probes and stops a set of services as separate processes on one machine.

    ``in_process``: serve each service's real servicers from this process instead, with the
    same settings, ports and dependency addresses (a spec's own ``main``, such as torchrun
    followers of a multi-rank trainer, is not run; ``extra_env`` applies to children only).
    """

    def __init__(
        self,
        services: tuple[str, ...] = SERVICE_NAMES,
        config_file: Path | None = None,
        free_ports: bool = False,
        log_dir: Path = Path(".k2rl/logs"),
        extra_env: dict[str, str] | None = None,
        inference_replicas: int = 1,
        in_process: bool = False,
    ) -> None:
        unknown = set(services) - set(SERVICE_NAMES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; choose from {', '.join(SERVICE_NAMES)}")
        if inference_replicas < 1:
            raise ValueError("inference_replicas must be >= 1")
        if not free_ports and inference_replicas > 1:
            raise ValueError("more than one inference replica needs free_ports (each takes its own ports)")
        if in_process and extra_env:
            raise ValueError("extra_env sets child processes' environment; in_process starts none")
        self.services = services
        self.config_file = config_file
        self.log_dir = log_dir
        self.extra_env = extra_env or {}
        self.in_process = in_process
        # Replicas after the first are instances "inference-1", ...: each its own process and
        # ports, each a dependency of the others (the controller spreads rollouts over them).
        instances = [(name, name) for name in services]
        if "inference" in services:
            instances += [(f"inference-{i}", "inference") for i in range(1, inference_replicas)]
        ports = iter(free_loopback_ports(2 * len(instances))) if free_ports else None
        self.kinds = dict(instances)
        self.settings = {name: self._settings_for(kind, ports) for name, kind in instances}
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
        self.log_dir.mkdir(parents=True, exist_ok=True)  # callers put their own logs beside the services'
        if self.in_process:
            self._start_in_process()
            return
        env = {**os.environ, **self.extra_env, "K2RL_DEPENDENCIES": json.dumps(self.dependency_addresses())}
        for name, settings in self.settings.items():
            command = [sys.executable, "-m", "k2rl.core.cli", "serve", self.kinds[name],
                       "--port", str(settings.grpc_port), "--metrics-port", str(settings.prometheus_port)]
            if self.config_file is not None:
                command += ["--config", str(self.config_file)]
            log_path = self.log_dir / f"{name}.log"
            with log_path.open("wb") as log_file:
                process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
            self.launched[name] = LaunchedService(name, settings, process, log_path)

    def _start_in_process(self) -> None:
        """Each service's runtime in this process, with what a child would get from its flags
        and K2RL_DEPENDENCIES; stops the ones already started if one fails."""
        dependencies = self.dependency_addresses()
        for name, settings in self.settings.items():
            overrides = {"port": settings.grpc_port, "metrics_port": settings.prometheus_port,
                         "dependencies": dependencies}
            settings = load_service_settings(self.kinds[name], self.config_file, overrides)
            runtime = ServiceRuntime(load_service(self.kinds[name]), settings)
            try:
                runtime.start()
            except BaseException:
                self.stop()
                raise
            self.launched[name] = LaunchedService(name, settings, None, self.log_dir / f"{name}.log", runtime)

    @contextmanager
    def serving(self, timeout_s: float = 60.0) -> Iterator[LocalCluster]:
        """Start, wait until every service is SERVING, yield the cluster; stop it on the way out."""
        self.start()
        try:
            self.wait_until_serving(timeout_s)
            yield self
        finally:
            self.stop()

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
        code = service.exit_code()
        if code is not None:
            raise ServiceExited(f"{service.name} exited with code {code}; last log lines:\n{service.log_tail()}")

    def first_exited(self) -> LaunchedService | None:
        return next((s for s in self.launched.values() if s.exit_code() is not None), None)

    def probe_all(self) -> list[HealthProbe]:
        return [probe_health(s.name, s.address, self.client_options()) for s in self.launched.values()]

    def scrape_metrics(self, name: str, timeout_s: float = 5.0) -> str:
        settings = self.settings[name]
        url = f"http://{settings.metrics_host}:{settings.prometheus_port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.read().decode()

    def stop(self, timeout_s: float = 20.0) -> dict[str, int]:
        """SIGTERM every child, wait for a graceful exit, SIGKILL what is left. Returns exit codes
        (0 for a runtime in this process that stopped)."""
        codes = self._stop_in_process()
        children = [s for s in self.launched.values() if s.process is not None]
        for service in children:
            if service.process.poll() is None:
                service.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for service in children:
            try:
                codes[service.name] = service.process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                os.killpg(service.process.pid, signal.SIGKILL)
                codes[service.name] = service.process.wait()
        return codes

    def _stop_in_process(self) -> dict[str, int]:
        """Stop the runtimes served from this process, in reverse start order."""
        runtimes = [s for s in self.launched.values() if s.runtime is not None]
        for service in reversed(runtimes):
            service.runtime.stop()
        return {service.name: 0 for service in runtimes}
