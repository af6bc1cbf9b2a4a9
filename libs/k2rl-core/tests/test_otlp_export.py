"""With an OTLP endpoint configured, a service exports its RPC spans to a real OTLP/gRPC receiver."""

from __future__ import annotations

import threading
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from k2rl.core.client import ClientOptions
from k2rl.core.config import ServiceSettings, load_settings
from k2rl.core.health import list_served_services
from k2rl.core.net import free_loopback_port
from k2rl.core.server import ServiceRuntime, ServiceSpec


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """A minimal OTLP trace receiver that records what it is sent."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.received = threading.Event()

    def Export(self, request, context):  # noqa: N802 - generated name
        self.requests.append(request)
        self.received.set()
        return trace_service_pb2.ExportTraceServiceResponse()


def test_spans_reach_the_otlp_endpoint() -> None:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    spec = ServiceSpec("judge", "no servicers", ServiceSettings, lambda _ctx: [])
    settings = load_settings(ServiceSettings, "judge", None, {
        "port": free_loopback_port(), "metrics_port": free_loopback_port(),
        "otlp_endpoint": f"http://127.0.0.1:{port}",
    })
    runtime = ServiceRuntime(spec, settings)
    runtime.start()
    try:
        list_served_services(settings.address, ClientOptions())
    finally:
        runtime.stop(0)  # shutdown flushes the batch processor
        server.stop(0)
    assert collector.received.is_set()
    spans = [
        (resource.resource, span)
        for request in collector.requests
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    names = {span.name for _, span in spans}
    assert "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo" in names
    service_names = {attr.value.string_value for resource, _ in spans for attr in resource.attributes
                     if attr.key == "service.name"}
    assert service_names == {"k2rl-judge"}
