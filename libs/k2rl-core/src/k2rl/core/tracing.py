"""OpenTelemetry tracing: a tracer provider per service, OTLP export when configured.

Export is off unless ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or ``K2RL_OTLP_ENDPOINT``) is set;
``trace_file`` appends finished spans as JSON lines, which is how tests see one trace
crossing several processes. Context crosses process boundaries as W3C ``traceparent``
in gRPC metadata (see interceptors.py), and thread-pool boundaries inside a process
through ``carry_context_into_executors`` (installed by every service runtime). Work that
a request hands to another process through stored state rather than an RPC (a published
weight version that engine workers pick up) carries ``current_traceparent()`` along and
starts its spans under ``context_from_traceparent``.
"""

from __future__ import annotations

import contextvars
import json
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from opentelemetry.context import Context
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

PROPAGATOR: TextMapPropagator = TraceContextTextMapPropagator()
TRACEPARENT = "traceparent"


def current_traceparent() -> str:
    """The current span's context as a W3C ``traceparent`` ("" when nothing is traced)."""
    carrier: dict[str, str] = {}
    PROPAGATOR.inject(carrier)
    return carrier.get(TRACEPARENT, "")


def context_from_traceparent(traceparent: str) -> Context:
    """A context whose parent is ``traceparent``; an empty or malformed one gives a root."""
    return PROPAGATOR.extract({TRACEPARENT: traceparent} if traceparent else {})

_plain_submit = ThreadPoolExecutor.submit


def _submit_in_callers_context(
    executor: ThreadPoolExecutor, fn: Callable[..., object], /, *args: object, **kwargs: object
) -> Future:
    return _plain_submit(executor, contextvars.copy_context().run, fn, *args, **kwargs)


def carry_context_into_executors() -> None:
    """Run work submitted to any ``ThreadPoolExecutor`` in the submitter's context (idempotent).

    Services fan work out to pools (rollout samples, judge items, sandbox executions); a
    pool thread starts with an empty context, so the RPCs it makes would begin new traces.
    With this, an RPC made from pool work is a child of the span that submitted the work,
    as ``asyncio.to_thread`` does for coroutines. Long-lived ``threading.Thread`` loops are
    left alone: they do not belong to the request that happened to start them.
    """
    ThreadPoolExecutor.submit = _submit_in_callers_context  # type: ignore[method-assign]


class JsonLinesSpanExporter(SpanExporter):
    """Appends each finished span as one JSON object per line.

    Safe across threads and processes sharing the file (a service and its worker
    processes read the same ``trace_file``): each export is one ``O_APPEND`` write.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        data = "".join(json.dumps(span_to_dict(span)) + "\n" for span in spans).encode()
        with self._lock:
            if self._fd is None:
                return SpanExportResult.FAILURE
            written = os.write(self._fd, data)
        return SpanExportResult.SUCCESS if written == len(data) else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def span_to_dict(span: ReadableSpan) -> dict[str, object]:
    context = span.get_span_context()
    return {
        "name": span.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
        "kind": span.kind.name,
        "service": span.resource.attributes.get("service.name"),
        "status": span.status.status_code.name,
        "attributes": dict(span.attributes or {}),
        "links": [{"trace_id": f"{link.context.trace_id:032x}", "span_id": f"{link.context.span_id:016x}"}
                  for link in span.links],
        "start_ns": span.start_time,
        "end_ns": span.end_time,
    }


def build_tracer_provider(
    service: str, otlp_endpoint: str | None = None, trace_file: Path | None = None
) -> TracerProvider:
    """Provider for one service; exporters only for the sinks that are configured."""
    provider = TracerProvider(resource=Resource.create({"service.name": f"k2rl-{service}"}))
    if otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=otlp_endpoint)))
    if trace_file is not None:
        provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(trace_file)))
    return provider
