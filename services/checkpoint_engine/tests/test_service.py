"""The checkpoint_engine coordinator over gRPC: registration, leases, validation, shard plans,
durable version numbering across a restart."""

from __future__ import annotations

import time

import grpc
import pytest
import torch

from k2rl.checkpoint_engine.service import SERVICE
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import assert_serves_contract, serve_in_process
from k2rl.weights import WeightStager
from k2rl.weights import proto as wire


def test_serves_health_and_reflection_for_its_contract(tmp_path) -> None:  # noqa: ANN001
    with serve_in_process(SERVICE, auth_token="t", state_url=f"sqlite:///{tmp_path}/s.db") as runtime:
        assert_serves_contract(runtime, "k2rl.checkpoint_engine.v1.CheckpointEngineService")


@pytest.fixture
def stub_factory(tmp_path):  # noqa: ANN001, ANN201
    def start(**overrides):  # noqa: ANN003, ANN202
        return serve_in_process(SERVICE, state_url=f"sqlite:///{tmp_path}/s.db", bucket_bytes=4096, **overrides)
    return start


def _stub(runtime):  # noqa: ANN001, ANN202
    return create_stub(checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub, runtime.settings.address, ClientOptions())


def _code(call) -> grpc.StatusCode:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code()


def _publish_request(stub, stager: WeightStager, step: int = 1) -> ce.PublishVersionRequest:  # noqa: ANN001
    trainer = stub.RegisterWorker(ce.RegisterWorkerRequest(kind=ce.WORKER_KIND_TRAINER_RANK, instance_name="t0"),
                                  timeout=5).worker_id
    staged = stager.stage({"w": torch.randn(40, 30), "b": torch.randn(7).half()})
    request = ce.PublishVersionRequest(trainer=ce.TrainerWeightSource(world_size=1),
                                       buckets=wire.planned_buckets(staged, trainer))
    request.version.trainer_step = step
    request.version.total_bytes = staged.plan.total_bytes
    return request


def test_registration_leases_and_bad_input(stub_factory) -> None:  # noqa: ANN001
    with stub_factory(lease_ttl_ms=300) as runtime:
        stub = _stub(runtime)
        try:
            assert _code(lambda: stub.RegisterWorker(ce.RegisterWorkerRequest(instance_name="x"), timeout=5)) \
                is grpc.StatusCode.INVALID_ARGUMENT
            assert _code(lambda: stub.RegisterWorker(ce.RegisterWorkerRequest(
                kind=ce.WORKER_KIND_INFERENCE_REPLICA, instance_name="r"), timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
            replica = ce.RegisterWorkerRequest(kind=ce.WORKER_KIND_INFERENCE_REPLICA, instance_name="r", address="h:1")
            first = stub.RegisterWorker(replica, timeout=5).worker_id
            second = stub.RegisterWorker(replica, timeout=5).worker_id
            status = stub.GetVersion(ce.GetVersionRequest(), timeout=5)
            assert [r.worker_id for r in status.replicas] == [second], "re-registration replaces, never duplicates"
            assert _code(lambda: stub.Heartbeat(ce.HeartbeatRequest(worker_id=first), timeout=5)) is grpc.StatusCode.NOT_FOUND
            stub.Heartbeat(ce.HeartbeatRequest(worker_id=second, weight_version=0), timeout=5)
            time.sleep(0.4)
            assert _code(lambda: stub.Heartbeat(ce.HeartbeatRequest(worker_id=second), timeout=5)) is grpc.StatusCode.NOT_FOUND
            third = stub.RegisterWorker(replica, timeout=5).worker_id
            stub.DeregisterWorker(ce.DeregisterWorkerRequest(worker_id=third), timeout=5)
            assert not stub.GetVersion(ce.GetVersionRequest(), timeout=5).replicas
        finally:
            close_stub(stub)


def test_publish_validates_plans_and_numbers_versions_durably(stub_factory) -> None:  # noqa: ANN001
    stager = WeightStager(bucket_bytes=1024)
    try:
        with stub_factory() as runtime:
            stub = _stub(runtime)
            try:
                request = _publish_request(stub, stager)
                bad = ce.PublishVersionRequest()
                bad.CopyFrom(request)
                bad.version.total_bytes += 1
                assert _code(lambda: stub.PublishVersion(bad, timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
                bad.CopyFrom(request)
                bad.buckets[1].bucket.index = 5
                assert _code(lambda: stub.PublishVersion(bad, timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
                bad.CopyFrom(request)
                bad.buckets[0].bucket.ClearField("checksum")
                assert _code(lambda: stub.PublishVersion(bad, timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
                bad.CopyFrom(request)
                bad.buckets[0].source_worker_id = "trainer-unknown"
                assert _code(lambda: stub.PublishVersion(bad, timeout=5)) is grpc.StatusCode.FAILED_PRECONDITION
                assert _code(lambda: stub.PublishVersion(ce.PublishVersionRequest(), timeout=5)) \
                    is grpc.StatusCode.INVALID_ARGUMENT
                accepted = stub.PublishVersion(request, timeout=5)
                assert accepted.version.version == 1 and accepted.bucket_count == len(request.buckets)
                assert stub.PublishVersion(request, timeout=5).version.version == 2
                request.version.version = 2
                assert _code(lambda: stub.PublishVersion(request, timeout=5)) is grpc.StatusCode.FAILED_PRECONDITION

                plan = stub.GetShardPlan(ce.GetShardPlanRequest(selectors=[
                    ce.TensorSelector(name="w", dim=1, start=0, length=15)]), timeout=5)
                assert plan.version.version == 2 and plan.needed_bytes == 40 * 30 * 4
                assert {e.tensor.name for e in plan.entries} == {"w"} and list(plan.bucket_indices) == sorted(
                    set(plan.bucket_indices))
                assert _code(lambda: stub.GetShardPlan(ce.GetShardPlanRequest(selectors=[
                    ce.TensorSelector(name="nope")]), timeout=5)) is grpc.StatusCode.INVALID_ARGUMENT
                status = stub.GetVersion(ce.GetVersionRequest(), timeout=5)
                assert status.latest_version.version == 2 and status.latest_phase == ce.VERSION_PHASE_GATHERING
            finally:
                close_stub(stub)
        with stub_factory() as runtime:  # a restarted coordinator keeps numbering upward
            stub = _stub(runtime)
            try:
                assert stub.GetVersion(ce.GetVersionRequest(), timeout=5).latest_version.version == 2
                assert stub.GetVersionPlan(ce.GetVersionPlanRequest(), timeout=5).version.version == 2
                assert stub.PublishVersion(_publish_request(stub, stager, step=3), timeout=5).version.version == 3
            finally:
                close_stub(stub)
    finally:
        stager.close()
