"""Membership in the checkpoint engine (settings checkpoint_engine_replica): the service
registers as an INFERENCE_REPLICA with its address and served version, heartbeats, registers
again when the coordinator forgot it, and keeps serving while no coordinator answers.

The coordinator is a contract double (CheckpointEngineService over the real protos); the
whole weight path with the real checkpoint engine is services/checkpoint_engine/tests/
test_inference_replica.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import free_loopback_port, serve_in_process
from k2rl.inference.service import SERVICE
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc


class FakeCoordinator(checkpoint_engine_pb2_grpc.CheckpointEngineServiceServicer):
    """Records registrations and heartbeats; ``forget()`` makes the next heartbeat NOT_FOUND."""

    def __init__(self) -> None:
        self.registrations: list[ce.RegisterWorkerRequest] = []
        self.heartbeats: list[ce.HeartbeatRequest] = []
        self.deregistered: list[str] = []
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def RegisterWorker(self, request, context):  # noqa: N802 - gRPC method name
        with self._lock:
            self.registrations.append(request)
            worker_id = f"replica-{len(self.registrations)}"
            self._known.add(worker_id)
        return ce.RegisterWorkerResponse(worker_id=worker_id, lease=ce.Lease(ttl_ms=600),
                                         latest_version=common_pb2.WeightVersion(version=4))

    def Heartbeat(self, request, context):  # noqa: N802
        with self._lock:
            if request.worker_id not in self._known:
                context.abort(grpc.StatusCode.NOT_FOUND, "register again")
            self.heartbeats.append(request)
        return ce.HeartbeatResponse(lease=ce.Lease(ttl_ms=600))

    def DeregisterWorker(self, request, context):  # noqa: N802
        self.deregistered.append(request.worker_id)
        return ce.DeregisterWorkerResponse()

    def forget(self) -> None:
        with self._lock:
            self._known.clear()


def _serve(coordinator: FakeCoordinator, port: int) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    checkpoint_engine_pb2_grpc.add_CheckpointEngineServiceServicer_to_server(coordinator, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    return server


def _until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


@pytest.fixture
def coordinator_port() -> Iterator[int]:
    yield free_loopback_port()


def test_off_by_default_the_service_does_not_contact_a_checkpoint_engine(coordinator_port: int) -> None:
    coordinator = FakeCoordinator()
    server = _serve(coordinator, coordinator_port)
    try:
        with serve_in_process(SERVICE, http_port=-1, num_kv_blocks=16,
                              dependencies={"checkpoint_engine": f"127.0.0.1:{coordinator_port}"}):
            time.sleep(1.0)
        assert coordinator.registrations == []
    finally:
        server.stop(0)


def test_registers_heartbeats_its_version_re_registers_and_survives_an_absent_coordinator(coordinator_port: int) -> None:
    coordinator = FakeCoordinator()
    overrides = {"http_port": -1, "num_kv_blocks": 16, "checkpoint_engine_replica": True, "replica_name": "pool/r7",
                 "initial_weight_version": 3, "dependencies": {"checkpoint_engine": f"127.0.0.1:{coordinator_port}"}}
    with serve_in_process(SERVICE, **overrides) as runtime:
        # No coordinator yet: the replica serves its startup weights regardless.
        stub = create_stub(inference_pb2_grpc.InferenceServiceStub, runtime.settings.address, ClientOptions())
        try:
            info = stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=10)
            assert info.weight_version.version == 3
        finally:
            close_stub(stub)
        server = _serve(coordinator, coordinator_port)
        try:
            _until(lambda: len(coordinator.heartbeats) >= 2)
            (first,) = coordinator.registrations
            assert first.kind == ce.WORKER_KIND_INFERENCE_REPLICA and first.instance_name == "pool/r7"
            assert first.address == runtime.settings.address and first.weight_version == 3
            assert {h.weight_version for h in coordinator.heartbeats} == {3}
            assert {h.worker_id for h in coordinator.heartbeats} == {"replica-1"}

            coordinator.forget()  # lease expired / coordinator restarted
            _until(lambda: len(coordinator.registrations) == 2)
            assert coordinator.registrations[1].instance_name == "pool/r7"
            assert coordinator.registrations[1].weight_version == 3
        finally:
            runtime.stop(0)  # deregisters while the coordinator still answers
            server.stop(0)
    assert coordinator.deregistered == ["replica-2"]
