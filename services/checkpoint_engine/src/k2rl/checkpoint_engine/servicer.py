"""gRPC glue of CheckpointEngineService: requests in, Coordinator calls, responses out."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from k2rl.checkpoint_engine.coordinator import Coordinator
from k2rl.checkpoint_engine.planning import plan_from_request
from k2rl.checkpoint_engine.settings import CheckpointEngineSettings
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.core.errors import InvalidArgument
from k2rl.core.tracing import current_traceparent
from k2rl.weights import LayoutError, select_shard
from k2rl.weights import proto as wire


class CheckpointEngineServicer(checkpoint_engine_pb2_grpc.CheckpointEngineServiceServicer):
    def __init__(self, coordinator: Coordinator, settings: CheckpointEngineSettings) -> None:
        self._coordinator = coordinator
        self._settings = settings

    def RegisterWorker(self, request: ce.RegisterWorkerRequest, context: grpc.ServicerContext) -> ce.RegisterWorkerResponse:
        worker, lease, latest = self._coordinator.register(request)
        return ce.RegisterWorkerResponse(worker_id=worker.worker_id, lease=lease, latest_version=latest)

    def Heartbeat(self, request: ce.HeartbeatRequest, context: grpc.ServicerContext) -> ce.HeartbeatResponse:
        lease, latest = self._coordinator.heartbeat(request.worker_id, request.weight_version)
        return ce.HeartbeatResponse(lease=lease, latest_version=latest)

    def DeregisterWorker(self, request: ce.DeregisterWorkerRequest, context: grpc.ServicerContext) -> ce.DeregisterWorkerResponse:
        self._coordinator.deregister(request.worker_id)
        return ce.DeregisterWorkerResponse()

    def PublishVersion(self, request: ce.PublishVersionRequest, context: grpc.ServicerContext) -> ce.PublishVersionResponse:
        plan = plan_from_request(request, self._settings.bucket_bytes, self._settings.max_tensors_per_version)
        plan.trace_parent = current_traceparent()  # the workers' spans of this version join the publisher's trace
        version, targets = self._coordinator.publish(plan, request.version.version)
        return ce.PublishVersionResponse(version=version, bucket_count=len(plan.buckets), target_replicas=targets)

    def GetVersion(self, request: ce.GetVersionRequest, context: grpc.ServicerContext) -> ce.GetVersionResponse:
        return self._coordinator.status(request.changed_since, request.wait_ms / 1000)

    def GetShardPlan(self, request: ce.GetShardPlanRequest, context: grpc.ServicerContext) -> ce.GetShardPlanResponse:
        plan = self._coordinator.plan(request.version)
        buckets = wire.buckets_from_proto(p.bucket for p in plan.buckets)
        try:
            entries = select_shard(buckets, [wire.selector_from_proto(s) for s in request.selectors])
        except LayoutError as error:
            raise InvalidArgument(str(error), field="selectors") from None
        needed = {e.piece.name: e.piece.spec.nbytes for e in entries}
        return ce.GetShardPlanResponse(version=plan.version, entries=wire.shard_entries_to_proto(entries),
                                       bucket_indices=sorted({e.bucket_index for e in entries}),
                                       needed_bytes=sum(needed.values()))

    def WaitForVersion(self, request: ce.WaitForVersionRequest, context: grpc.ServicerContext) -> Iterator[ce.WaitForVersionResponse]:
        yield from self._coordinator.wait(request.min_version, list(request.replica_worker_ids), context.is_active)

    def ReportUpdate(self, request: ce.ReportUpdateRequest, context: grpc.ServicerContext) -> ce.ReportUpdateResponse:
        latest, will_retry = self._coordinator.report_update(request)
        return ce.ReportUpdateResponse(latest_version=latest, will_retry=will_retry)

    def GetVersionPlan(self, request: ce.GetVersionPlanRequest, context: grpc.ServicerContext) -> ce.GetVersionPlanResponse:
        return self._coordinator.plan(request.version)

    def ReportVersionProgress(self, request: ce.ReportVersionProgressRequest,
                              context: grpc.ServicerContext) -> ce.ReportVersionProgressResponse:
        return ce.ReportVersionProgressResponse(phase=self._coordinator.report_progress(request))
