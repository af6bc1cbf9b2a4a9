"""`k2rl up --check`: prove every launched service works end to end, not just that it started.

For each service: grpc health answers SERVING and /metrics reports it serving. Then, when
the controller runs, its GetSystemStatus RPC makes the controller probe every other service
(health plus an authenticated call) and the state store, across process boundaries.
"""

from __future__ import annotations

import urllib.error
from dataclasses import dataclass, field

import grpc

from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import close_stub, create_stub
from k2rl.core.health import HealthProbe
from k2rl.core.launcher import LocalCluster


@dataclass
class RoundTripReport:
    probes: list[HealthProbe]
    details: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures and all(p.serving for p in self.probes)


def round_trip(cluster: LocalCluster) -> RoundTripReport:
    report = RoundTripReport(cluster.probe_all())
    for probe in report.probes:
        if not probe.serving:
            report.failures.append(f"{probe.name}: health {probe.status} {probe.error}")
        report.details[probe.name] = _check_metrics(cluster, probe.name, report)
    if "controller" in cluster.launched:
        report.details["controller"] += "; " + _check_system_status(cluster, report)
    return report


def _check_metrics(cluster: LocalCluster, name: str, report: RoundTripReport) -> str:
    try:
        text = cluster.scrape_metrics(name)
    except (urllib.error.URLError, OSError) as error:
        report.failures.append(f"{name}: /metrics unreachable: {error}")
        return "/metrics unreachable"
    if f'k2rl_service_serving{{service="{name}"}} 1.0' not in text:
        report.failures.append(f"{name}: /metrics does not report the service serving")
        return "/metrics wrong"
    return f"/metrics ok ({len(text.splitlines())} lines)"


def _check_system_status(cluster: LocalCluster, report: RoundTripReport) -> str:
    others = [name for name in cluster.launched if name != "controller"]
    stub = create_stub(controller_pb2_grpc.ControllerServiceStub, cluster.launched["controller"].address,
                       cluster.client_options())
    try:
        reply = stub.GetSystemStatus(
            controller_pb2.GetSystemStatusRequest(names=[*others, "state_store"]), timeout=30)
    except grpc.RpcError as error:
        report.failures.append(f"controller: GetSystemStatus failed: {error.code().name} {error.details()}")
        return "GetSystemStatus failed"
    finally:
        close_stub(stub)
    serving = controller_pb2.HealthStatus.HEALTH_STATUS_SERVING
    for dependency in reply.dependencies:
        if dependency.status != serving:
            status = controller_pb2.HealthStatus.Name(dependency.status)
            report.failures.append(f"controller sees {dependency.name} {status}: {dependency.error.message}")
    up = sum(d.status == serving for d in reply.dependencies)
    return f"sees {up}/{len(reply.dependencies)} dependencies serving"
