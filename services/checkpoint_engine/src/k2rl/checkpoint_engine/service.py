"""The checkpoint_engine service: versioned, pipelined weight broadcast from trainer to inference.

This process is the coordinator (control plane). The data plane runs in engine worker
processes (``python -m k2rl.checkpoint_engine.worker``), one per node or device, which
register here and move bytes over torch.distributed and IPC buffers.
"""

from __future__ import annotations

from collections.abc import Callable

from k2rl.checkpoint_engine.coordinator import Coordinator
from k2rl.checkpoint_engine.servicer import CheckpointEngineServicer
from k2rl.checkpoint_engine.settings import CheckpointEngineSettings
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2, checkpoint_engine_pb2_grpc
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.core.store import open_store


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, CheckpointEngineSettings)
    store = open_store(settings.state_url, namespace=settings.state_namespace)
    context.on_shutdown.append(store.close)
    coordinator = Coordinator(store, settings.lease_ttl_ms, on_progress=_progress_metrics(context))
    servicer = CheckpointEngineServicer(coordinator, settings)
    return [ServicerBinding.generated(checkpoint_engine_pb2, checkpoint_engine_pb2_grpc, "CheckpointEngineService", servicer)]


def _progress_metrics(context: ServiceContext) -> Callable[[ce.ReportVersionProgressRequest], None]:
    """Per-phase durations, bytes moved and bandwidth, from engine workers' progress reports."""
    phase_seconds = context.metrics.histogram(
        "k2rl_checkpoint_engine_phase_seconds", "time an engine worker spent per update phase", ("phase",),
        buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300))
    bytes_moved = context.metrics.counter("k2rl_checkpoint_engine_bytes_distributed", "bytes broadcast by engine workers")
    bandwidth = context.metrics.gauge("k2rl_checkpoint_engine_bandwidth_bytes_per_second",
                                      "bytes / (gather + broadcast + reload wait) of the last update of a worker")
    gathered = context.metrics.counter("k2rl_checkpoint_engine_bytes_gathered",
                                       "bytes engine workers read from a version's source (trainer buffers or disk)")
    version = context.metrics.gauge("k2rl_checkpoint_engine_completed_version", "last version an engine worker finished")

    def observe(report: ce.ReportVersionProgressRequest) -> None:
        if report.phase != ce.VERSION_PHASE_COMPLETE:
            return
        for phase, seconds in report.phase_seconds.items():
            phase_seconds.labels(phase).observe(seconds)
        bytes_moved.inc(report.bytes_distributed)
        if report.bytes_gathered:
            gathered.inc(report.bytes_gathered)
        busy = sum(report.phase_seconds.values())
        if busy > 0:
            bandwidth.set(report.bytes_distributed / busy)
        version.set(report.version)

    return observe


SERVICE = ServiceSpec("checkpoint_engine", "versioned, pipelined weight broadcast from trainer to inference",
                      CheckpointEngineSettings, build)
