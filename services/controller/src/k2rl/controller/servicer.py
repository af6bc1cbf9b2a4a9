"""gRPC glue of the controller. Run orchestration arrives with the controller issue; until
then its RPCs answer UNIMPLEMENTED and GetSystemStatus is served in full."""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from k2rl.common.v1 import common_pb2
from k2rl.controller.system_status import DependencyProbe, probe_dependencies
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions
from k2rl.core.config import ServiceSettings
from k2rl.core.errors import InvalidArgument
from k2rl.core.server import VERSION

DEFAULT_PROBE_TIMEOUT_MS = 2000
MAX_PROBE_TIMEOUT_MS = 60_000


class ControllerServicer(controller_pb2_grpc.ControllerServiceServicer):
    def __init__(self, settings: ServiceSettings, client_options: ClientOptions) -> None:
        self._settings = settings
        self._client_options = client_options

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
