"""Trace context follows work into thread pools once the runtime installed the carrier, and
into another process through a stored traceparent; span files take several writers."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from k2rl.core.tracing import (
    carry_context_into_executors,
    context_from_traceparent,
    current_traceparent,
)


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


def test_a_stored_traceparent_parents_spans_started_later_and_a_missing_one_gives_a_root() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    assert current_traceparent() == ""
    with tracer.start_as_current_span("publish") as publish:
        stored = current_traceparent()
    for name, traceparent in (("follow-up", stored), ("untraced", ""), ("garbled", "00-zz-01")):
        with tracer.start_as_current_span(name, context=context_from_traceparent(traceparent)):
            pass
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert spans["follow-up"].parent is not None
    assert spans["follow-up"].parent.span_id == publish.get_span_context().span_id
    assert spans["follow-up"].context.trace_id == publish.get_span_context().trace_id
    assert spans["untraced"].parent is None and spans["garbled"].parent is None


# Run in separate interpreters: with --import-mode=importlib a spawned child cannot import
# this test module, so each writer is a small program of its own.
WRITE_SPANS = """
import sys
from pathlib import Path
from k2rl.core.tracing import build_tracer_provider
path, service, count = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
provider = build_tracer_provider(service, trace_file=path)
tracer = provider.get_tracer("test")
for index in range(count):
    with tracer.start_as_current_span(f"{service}-{index}", attributes={"padding": "x" * 3000}):
        pass
provider.shutdown()
"""


def test_processes_sharing_a_span_file_append_whole_lines(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    writers = [subprocess.Popen([sys.executable, "-c", WRITE_SPANS, str(path), f"w{i}", "200"]) for i in range(3)]
    for writer in writers:
        assert writer.wait(timeout=60) == 0
    spans = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(s["name"] for s in spans) == sorted(f"w{i}-{n}" for i in range(3) for n in range(200))
