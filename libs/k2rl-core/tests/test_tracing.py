"""Trace context follows work into thread pools once the runtime installed the carrier."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from k2rl.core.tracing import carry_context_into_executors


def test_work_submitted_to_a_pool_runs_under_the_submitters_span_and_leaks_nothing() -> None:
    carry_context_into_executors()
    carry_context_into_executors()  # idempotent
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def child_span() -> str:
        with tracer.start_as_current_span("pool-work") as span:
            return f"{span.get_span_context().span_id:016x}"

    with ThreadPoolExecutor(1) as pool:
        with tracer.start_as_current_span("request") as request:
            child_id = pool.submit(child_span).result()
        orphan_check = pool.submit(lambda: trace.get_current_span().get_span_context().is_valid).result()

    (work,) = [s for s in exporter.get_finished_spans() if s.name == "pool-work"]
    assert f"{work.context.span_id:016x}" == child_id
    assert work.parent is not None and work.parent.span_id == request.get_span_context().span_id
    assert work.context.trace_id == request.get_span_context().trace_id
    assert not orphan_check  # later work submitted outside the span does not inherit it
