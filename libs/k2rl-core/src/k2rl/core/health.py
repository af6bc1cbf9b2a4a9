"""Probing services through the standard grpc.health.v1 protocol."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from k2rl.core.client import ClientOptions, close_stub, create_stub

PROBE_FAILURES = {
    grpc.StatusCode.NOT_FOUND: "SERVICE_UNKNOWN",
    grpc.StatusCode.DEADLINE_EXCEEDED: "TIMEOUT",
}


@dataclass(frozen=True)
class HealthProbe:
    """What one health check found."""

    name: str
    address: str
    status: str  # SERVING, NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN, TIMEOUT or UNREACHABLE
    latency_ms: float
    error: str = ""

    @property
    def serving(self) -> bool:
        return self.status == "SERVING"


def probe_health(name: str, address: str, options: ClientOptions | None = None,
                 timeout_s: float = 2.0, grpc_service: str = "") -> HealthProbe:
    """One ``Health/Check`` call; never raises, failures are reported in the probe."""
    # A probe answers "is it up now": no retries, so an unreachable service fails fast.
    options = replace(options or ClientOptions(), max_attempts=1)
    stub = create_stub(health_pb2_grpc.HealthStub, address, options)
    started = time.perf_counter()
    try:
        reply = stub.Check(health_pb2.HealthCheckRequest(service=grpc_service), timeout=timeout_s)
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return HealthProbe(name, address, status, (time.perf_counter() - started) * 1e3)
    except grpc.RpcError as error:
        status = PROBE_FAILURES.get(error.code(), "UNREACHABLE")
        return HealthProbe(name, address, status, (time.perf_counter() - started) * 1e3,
                           f"{error.code().name}: {error.details()}")
    finally:
        close_stub(stub)


def wait_until_serving(name: str, address: str, timeout_s: float,
                       options: ClientOptions | None = None) -> HealthProbe:
    """Poll health until SERVING or ``timeout_s`` passes; returns the last probe."""
    deadline = time.monotonic() + timeout_s
    while True:
        probe = probe_health(name, address, options, timeout_s=1.0)
        if probe.serving or time.monotonic() >= deadline:
            return probe
        time.sleep(0.1)


def list_served_services(address: str, options: ClientOptions | None = None,
                         timeout_s: float = 2.0) -> list[str]:
    """Service names ``address`` serves, via server reflection (an authenticated call).

    Raises ``grpc.RpcError`` (e.g. UNAUTHENTICATED with a wrong token, UNAVAILABLE when down).
    """
    options = replace(options or ClientOptions(), max_attempts=1)
    stub = create_stub(reflection_pb2_grpc.ServerReflectionStub, address, options)
    try:
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = stub.ServerReflectionInfo(iter([request]), timeout=timeout_s)
        return sorted(s.name for reply in replies for s in reply.list_services_response.service)
    finally:
        close_stub(stub)
