"""gRPC glue of the controller: requests -> RunManager / system probes -> responses."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from k2rl.common.v1 import common_pb2
from k2rl.controller.runs import RunManager
from k2rl.controller.system_status import DependencyProbe, probe_dependencies
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions
from k2rl.core.config import ServiceSettings
from k2rl.core.errors import InvalidArgument
from k2rl.core.server import VERSION

DEFAULT_PROBE_TIMEOUT_MS = 2000
MAX_PROBE_TIMEOUT_MS = 60_000
MAX_PAGE_SIZE = 1000


def _page(token: str, size: int, default: int) -> tuple[int, int]:
    """(start offset, page size) of a page token (a decimal offset) and requested size."""
    if token and not token.isdigit():
        raise InvalidArgument("not a page token this service issued", field="page_token")
    return int(token or 0), min(size or default, MAX_PAGE_SIZE)


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, settings: ServiceSettings, client_options: ClientOptions, runs: RunManager) -> None:
        self._settings = settings
        self._client_options = client_options
        self._runs = runs

    def StartRun(self, request: controller_pb2.StartRunRequest,
                 context: grpc.ServicerContext) -> controller_pb2.StartRunResponse:
        return controller_pb2.StartRunResponse(run=self._runs.start(request.config, request.run_id, request.resume))

    def GetRun(self, request: controller_pb2.GetRunRequest, context: grpc.ServicerContext) -> controller_pb2.GetRunResponse:
        return controller_pb2.GetRunResponse(run=self._runs.get(request.run_id))

    def ListRuns(self, request: controller_pb2.ListRunsRequest,
                 context: grpc.ServicerContext) -> controller_pb2.ListRunsResponse:
        start, size = _page(request.page_token, request.page_size, 50)
        states = set(request.states)
        runs = [r for r in self._runs.store.list_runs() if not states or r.state in states]
        end = start + size
        return controller_pb2.ListRunsResponse(runs=runs[start:end], next_page_token=str(end) if end < len(runs) else "")

    def StopRun(self, request: controller_pb2.StopRunRequest,
                context: grpc.ServicerContext) -> controller_pb2.StopRunResponse:
        return controller_pb2.StopRunResponse(run=self._runs.stop(request.run_id, request.mode, request.reason))

    def ListIterations(self, request: controller_pb2.ListIterationsRequest,
                       context: grpc.ServicerContext) -> controller_pb2.ListIterationsResponse:
        self._runs.get(request.run_id)
        start, size = _page(request.page_token, request.page_size, 100)
        iterations = self._runs.store.iterations(request.run_id, start, size)
        total = self._runs.store.iteration_count(request.run_id)
        end = start + len(iterations)
        return controller_pb2.ListIterationsResponse(iterations=iterations,
                                                     next_page_token=str(end) if end < total else "")

    def WatchRun(self, request: controller_pb2.WatchRunRequest,
                 context: grpc.ServicerContext) -> Iterator[controller_pb2.WatchRunResponse]:
        after = request.after_sequence if request.HasField("after_sequence") else None
        yield from self._runs.watch(request.run_id, after, context.is_active)

    def GetSystemStatus(
        self, request: controller_pb2.GetSystemStatusRequest, context: grpc.ServicerContext
    ) -> controller_pb2.GetSystemStatusResponse:
        timeout_ms = request.probe_timeout_ms or DEFAULT_PROBE_TIMEOUT_MS
        if timeout_ms > MAX_PROBE_TIMEOUT_MS:
            raise InvalidArgument(f"must be at most {MAX_PROBE_TIMEOUT_MS}", field="probe_timeout_ms")
        check_time = Timestamp()
        check_time.GetCurrentTime()
        dependencies = {k: v for k, v in self._settings.dependencies.items() if k != "controller"}
        try:
            probes = probe_dependencies(dependencies, self._client_options, timeout_ms / 1000,
                                        self._settings.state_url, list(request.names))
        except ValueError as error:
            raise InvalidArgument(str(error), field="names") from None
        return controller_pb2.GetSystemStatusResponse(
            dependencies=[_to_proto(p) for p in probes],
            healthy=all(p.status == "SERVING" for p in probes if p.required),
            check_time=check_time,
            controller_version=VERSION,
        )


def _to_proto(probe: DependencyProbe) -> controller_pb2.DependencyStatus:
    error = None
    if probe.error_code or probe.error_message:
        error = common_pb2.ErrorDetail(code=probe.error_code, message=probe.error_message, hint=probe.hint,
                                       retryable=probe.status in {"UNREACHABLE", "NOT_SERVING", "TIMEOUT"})
    return controller_pb2.DependencyStatus(
        name=probe.name, address=probe.address, health_service=probe.health_service,
        status=controller_pb2.HealthStatus.Value(f"HEALTH_STATUS_{probe.status}"),
        latency_ms=probe.latency_ms, error=error, required=probe.required, tls=probe.tls,
    )
