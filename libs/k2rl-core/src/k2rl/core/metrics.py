"""Prometheus metrics: a registry per service (no process-global state) and its /metrics endpoint."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    start_http_server,
)

# RPC latencies span sub-millisecond health checks to minute-long train steps.
RPC_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300,
)


@dataclass(frozen=True)
class RpcMetrics:
    """Standard per-RPC series every service exports (names follow go-grpc-prometheus)."""

    started: Counter
    handled: Counter
    latency: Histogram
    in_flight: Gauge
    messages_received: Counter
    messages_sent: Counter


class ServiceMetrics:
    """Owns one service's registry; services add their own series with ``counter()`` etc."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.info = Gauge(
            "k2rl_service_info", "Constant 1, labelled with the service name and version.",
            ["service", "version"], registry=self.registry,
        )
        self.up = Gauge(
            "k2rl_service_serving", "1 while the service reports SERVING on grpc health.",
            ["service"], registry=self.registry,
        )
        self.rpc = RpcMetrics(
            started=Counter(
                "k2rl_grpc_server_started_total", "RPCs started on the server.",
                ["service", "grpc_service", "grpc_method"], registry=self.registry,
            ),
            handled=Counter(
                "k2rl_grpc_server_handled_total", "RPCs completed, by status code.",
                ["service", "grpc_service", "grpc_method", "grpc_code"], registry=self.registry,
            ),
            latency=Histogram(
                "k2rl_grpc_server_handling_seconds", "Time from request to final status.",
                ["service", "grpc_service", "grpc_method"], buckets=RPC_LATENCY_BUCKETS,
                registry=self.registry,
            ),
            in_flight=Gauge(
                "k2rl_grpc_server_in_flight", "RPCs being handled now.",
                ["service", "grpc_service", "grpc_method"], registry=self.registry,
            ),
            messages_received=Counter(
                "k2rl_grpc_server_msg_received_total", "Request messages received.",
                ["service", "grpc_service", "grpc_method"], registry=self.registry,
            ),
            messages_sent=Counter(
                "k2rl_grpc_server_msg_sent_total", "Response messages sent.",
                ["service", "grpc_service", "grpc_method"], registry=self.registry,
            ),
        )

    def counter(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def gauge(self, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, labels, registry=self.registry)

    def histogram(
        self, name: str, doc: str, labels: tuple[str, ...] = (), buckets: tuple[float, ...] = RPC_LATENCY_BUCKETS
    ) -> Histogram:
        return Histogram(name, doc, labels, buckets=buckets, registry=self.registry)


class MetricsEndpoint:
    """The /metrics HTTP server of one service, started and stopped with it."""

    def __init__(self, metrics: ServiceMetrics, host: str, port: int) -> None:
        self._server: WSGIServer
        self._thread: threading.Thread
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)

    @property
    def port(self) -> int:
        return self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
