"""One way to start a k2rl service.

A service package exports a ``ServiceSpec`` (entry point group ``k2rl.services``); its
``build`` function receives a ``ServiceContext`` and returns the servicers to mount.
``ServiceRuntime`` does the rest, identically for every service: gRPC server with limits,
interceptors (tracing, metrics, error mapping, auth), TLS, grpc.health.v1, reflection, the
/metrics endpoint, and graceful shutdown on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterable
from concurrent import futures
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from opentelemetry.sdk.trace import TracerProvider

from k2rl.core.client import ClientOptions, create_stub
from k2rl.core.config import ServiceSettings, load_settings
from k2rl.core.interceptors import AuthInterceptor, ObservabilityInterceptor
from k2rl.core.logs import configure_logging
from k2rl.core.metrics import MetricsEndpoint, ServiceMetrics
from k2rl.core.tracing import build_tracer_provider, carry_context_into_executors

log = logging.getLogger(__name__)

VERSION = "0.1.0"


@dataclass(frozen=True)
class ServicerBinding:
    """One gRPC service to mount: generated ``add_*_to_server``, the servicer, its full name."""

    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any
    full_name: str

    @classmethod
    def generated(cls, pb2: ModuleType, pb2_grpc: ModuleType, service: str, servicer: Any) -> ServicerBinding:
        """Binding for a protoc-generated service, e.g. ``(trainer_pb2, trainer_pb2_grpc, "TrainerService", s)``."""
        add_to_server = getattr(pb2_grpc, f"add_{service}Servicer_to_server")
        return cls(add_to_server, servicer, pb2.DESCRIPTOR.services_by_name[service].full_name)


@dataclass
class ServiceContext:
    """What a service's ``build`` gets: its settings and the shared runtime pieces."""

    settings: ServiceSettings
    metrics: ServiceMetrics
    tracer_provider: TracerProvider
    on_shutdown: list[Callable[[], None]] = field(default_factory=list)

    def client(self, stub_type: Callable[[grpc.Channel], Any], dependency: str) -> Any:
        """A typed stub to another service, addressed by name through ``settings.dependencies``."""
        try:
            target = self.settings.dependencies[dependency]
        except KeyError:
            known = ", ".join(sorted(self.settings.dependencies))
            raise ValueError(f"no address configured for dependency {dependency!r} (known: {known})") from None
        return create_stub(stub_type, target, ClientOptions.from_settings(self.settings, self.tracer_provider))


@dataclass(frozen=True)
class ServiceSpec:
    """A deployable service: its name, settings type and how to build its servicers."""

    name: str
    description: str
    settings_type: type[ServiceSettings]
    build: Callable[[ServiceContext], Iterable[ServicerBinding]]
    # Replaces ``serve(spec, settings)`` as the foreground body of ``k2rl serve <name>``, for
    # services whose process does more than serve, e.g. a multi-rank trainer whose ranks
    # other than 0 run a worker loop instead of a gRPC server. None = the default serve loop.
    main: Callable[[ServiceSpec, ServiceSettings], None] | None = None


def installed_services() -> list[str]:
    """Names of the installed services (entry point group ``k2rl.services``), none imported."""
    return sorted(entry.name for entry in entry_points(group="k2rl.services"))


def load_service(name: str) -> ServiceSpec:
    """Import only the named service, so one broken service cannot stop the others starting."""
    matches = entry_points(group="k2rl.services", name=name)
    if not matches:
        raise LookupError(f"service {name!r} is not installed (installed: {', '.join(installed_services())})")
    (entry,) = matches
    spec = entry.load()
    if not isinstance(spec, ServiceSpec):
        raise TypeError(f"entry point {entry.value} is not a ServiceSpec")
    return spec


def load_service_settings(name: str, config_file: Path | None = None,
                          overrides: dict[str, Any] | None = None) -> ServiceSettings:
    """``name``'s own settings type, so keys only that service knows are accepted in config."""
    return load_settings(load_service(name).settings_type, name, config_file, overrides)


class ServiceRuntime:
    """A running service. ``start()`` returns once it serves; ``stop()`` drains and closes."""

    def __init__(self, spec: ServiceSpec, settings: ServiceSettings) -> None:
        self.spec = spec
        self.settings = settings
        self.metrics = ServiceMetrics(spec.name)
        self.tracer_provider = build_tracer_provider(spec.name, settings.otlp_endpoint, settings.trace_file)
        carry_context_into_executors()
        self.context = ServiceContext(settings, self.metrics, self.tracer_provider)
        self.health = health.HealthServicer()
        self.server: grpc.Server | None = None
        self.metrics_endpoint: MetricsEndpoint | None = None
        self.bound_port: int = 0
        self._stopped = threading.Event()
        self._service_names: list[str] = []

    def start(self) -> None:
        settings = self.settings
        bindings = list(self.spec.build(self.context))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.max_workers,
                                       thread_name_prefix=f"{self.spec.name}-rpc"),
            interceptors=self._interceptors(),
            options=[
                ("grpc.max_receive_message_length", settings.max_message_bytes),
                ("grpc.max_send_message_length", settings.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # Clients ping every 30 s during a call (client.py); gRPC's server default only
                # tolerates one ping per 5 min without data and then sends GOAWAY "too_many_pings",
                # which breaks a long, quiet stream such as WaitForVersion during a slow update.
                ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
            ],
        )
        for binding in bindings:
            binding.add_to_server(binding.servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._service_names = [b.full_name for b in bindings]
        reflection.enable_server_reflection(
            [*self._service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            self.server,
        )
        self.bound_port = self._bind(self.server)
        self.server.start()
        self.metrics_endpoint = MetricsEndpoint(self.metrics, settings.metrics_host, settings.prometheus_port)
        self.metrics.info.labels(self.spec.name, VERSION).set(1)
        self._set_serving(True)
        log.info("serving", extra={"fields": {
            "address": f"{settings.host}:{self.bound_port}", "tls": settings.tls_enabled,
            "auth": settings.auth_token is not None, "metrics_port": self.metrics_endpoint.port,
            "services": self._service_names,
        }})

    def _interceptors(self) -> list[grpc.ServerInterceptor]:
        tracer = self.tracer_provider.get_tracer("k2rl.server")
        interceptors: list[grpc.ServerInterceptor] = [
            ObservabilityInterceptor(self.spec.name, self.metrics, tracer)
        ]
        token = self.settings.token()
        if token:
            interceptors.append(AuthInterceptor(token))
        return interceptors

    def _bind(self, server: grpc.Server) -> int:
        settings = self.settings
        address = f"{settings.host}:{settings.grpc_port}"
        try:
            if settings.tls_enabled:
                assert settings.tls_cert_file is not None and settings.tls_key_file is not None
                credentials = grpc.ssl_server_credentials(
                    [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
                )
                return server.add_secure_port(address, credentials)
            return server.add_insecure_port(address)
        except RuntimeError as error:  # grpc reports bind failures as RuntimeError
            raise OSError(f"{self.spec.name}: cannot bind gRPC port {address} (in use?): {error}") from error

    def _set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ["", *self._service_names]:
            self.health.set(name, status)
        self.metrics.up.labels(self.spec.name).set(1 if serving else 0)

    def stop(self, grace_s: float | None = None) -> None:
        """Report NOT_SERVING, let in-flight RPCs finish within the grace period, close all."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        grace = self.settings.grace_period_s if grace_s is None else grace_s
        self._set_serving(False)
        if self.server is not None:
            self.server.stop(grace).wait()
        for hook in reversed(self.context.on_shutdown):
            hook()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.stop()
        self.tracer_provider.shutdown()
        log.info("stopped")

    def wait(self) -> None:
        self._stopped.wait()


def serve(spec: ServiceSpec, settings: ServiceSettings) -> None:
    """Run ``spec`` in the foreground until SIGTERM or SIGINT, then shut down gracefully."""
    configure_logging(spec.name, settings.log_level, settings.log_format)
    runtime = ServiceRuntime(spec, settings)
    runtime.start()
    shutdown_requested = threading.Event()

    def request_shutdown(signum: int, _frame: Any) -> None:
        log.info("shutdown requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        shutdown_requested.set()

    signal.signal(signal.SIGTERM, request_shutdown)
    signal.signal(signal.SIGINT, request_shutdown)
    shutdown_requested.wait()
    runtime.stop()
