"""Probe every dependency of the controller: is it up, does it accept our token?

A dependency counts as SERVING only when both hold: grpc.health.v1 reports its service
SERVING (health needs no token, so probes and Kubernetes agree), and an authenticated call
(server reflection) succeeds, which catches a token mismatch before a run starts instead
of in the middle of its first iteration.
"""

from __future__ import annotations

import contextvars
import importlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc

from k2rl.core.client import ClientOptions
from k2rl.core.health import list_served_services, probe_health
from k2rl.core.store import StoreError, open_store

STATE_STORE = "state_store"

HINTS = {
    "UNREACHABLE": "is the service running and is its address in K2RL_DEPENDENCIES right?",
    "UNAUTHENTICATED": "is K2RL_AUTH_TOKEN the same for the controller and this service?",
    "SERVICE_UNKNOWN": "another program answers at this address; check the port mapping",
    "NOT_SERVING": "the service is starting, loading or shutting down; retry shortly",
    "TIMEOUT": "the service did not answer in time; is it overloaded or stuck?",
}


@dataclass(frozen=True)
class DependencyProbe:
    """The outcome of probing one dependency."""

    name: str
    address: str
    health_service: str
    status: str  # a HealthStatus name without its prefix, e.g. "SERVING"
    latency_ms: float
    required: bool
    tls: bool
    error_code: str = ""
    error_message: str = ""

    @property
    def hint(self) -> str:
        return HINTS.get(self.status, "")


def grpc_service_name(dependency: str) -> str:
    """Full name of a k2rl service's gRPC service, read from its generated descriptor
    (replicas "inference-1", ... are inference)."""
    kind = dependency.split("-", 1)[0]
    module = importlib.import_module(f"k2rl.{kind}.v1.{kind}_pb2")
    (service,) = module.DESCRIPTOR.services_by_name.values()
    return service.full_name


def probe_service(name: str, address: str, options: ClientOptions, timeout_s: float) -> DependencyProbe:
    service = grpc_service_name(name)
    tls = options.tls_ca_file is not None
    health = probe_health(name, address, options, timeout_s, grpc_service=service)
    if not health.serving:
        code, _, message = health.error.partition(": ")
        return DependencyProbe(name, address, service, health.status, health.latency_ms, True, tls,
                               code, message)
    started = time.perf_counter()
    try:
        served = list_served_services(address, options, timeout_s)
    except grpc.RpcError as error:
        status = "UNAUTHENTICATED" if error.code() is grpc.StatusCode.UNAUTHENTICATED else "UNREACHABLE"
        latency = health.latency_ms + (time.perf_counter() - started) * 1e3
        return DependencyProbe(name, address, service, status, latency, True, tls,
                               error.code().name, error.details() or "")
    latency = health.latency_ms + (time.perf_counter() - started) * 1e3
    if service not in served:
        return DependencyProbe(name, address, service, "SERVICE_UNKNOWN", latency, True, tls,
                               "NOT_FOUND", f"{address} serves {', '.join(served)}, not {service}")
    return DependencyProbe(name, address, service, "SERVING", latency, True, tls)


def probe_state_store(url: str | None) -> DependencyProbe:
    """Open the store and read one key: the controller cannot resume a run without it."""
    shown = redact(url) if url else "sqlite (embedded default)"
    started = time.perf_counter()
    try:
        with open_store(url) as store:
            store.get("system/probe")
    except (StoreError, OSError) as error:
        return DependencyProbe(STATE_STORE, shown, "", "UNREACHABLE", (time.perf_counter() - started) * 1e3,
                               True, False, "UNAVAILABLE", str(error))
    return DependencyProbe(STATE_STORE, shown, "", "SERVING", (time.perf_counter() - started) * 1e3, True, False)


def redact(url: str) -> str:
    """Drop credentials from a URL before it is shown anywhere."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def probe_dependencies(
    dependencies: dict[str, str], options: ClientOptions, timeout_s: float, state_url: str | None,
    names: list[str] | None = None,
) -> list[DependencyProbe]:
    """Probe the named dependencies (all when ``names`` is empty), concurrently, sorted by name."""
    wanted = sorted(names or [*dependencies, STATE_STORE])
    unknown = [n for n in wanted if n not in dependencies and n != STATE_STORE]
    if unknown:
        raise ValueError(f"unknown dependencies {unknown}; configured: {sorted(dependencies)} and {STATE_STORE}")
    with ThreadPoolExecutor(max_workers=max(len(wanted), 1), thread_name_prefix="probe") as pool:
        # Each probe runs in a copy of the caller's context so its spans join the caller's trace.
        futures = [
            pool.submit(contextvars.copy_context().run, probe_state_store, state_url) if name == STATE_STORE
            else pool.submit(contextvars.copy_context().run, probe_service, name, dependencies[name],
                             options, timeout_s)
            for name in wanted
        ]
        return [future.result() for future in futures]
