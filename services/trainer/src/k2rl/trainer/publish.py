"""PublishWeights: the trainer's side of the checkpoint engine (K2 §3.3.2, proto trainer.v1).

Every trainer rank holds the full parameters (ZeRO-1 shards only optimizer state), so the
ranks split the staging work: rank r packs tensors r, r + N, ... (``weights_out`` order, HF
names, the host copies while offloaded) into its own POSIX shared-memory staging buffer
with per-bucket checksums (``k2rl.weights.WeightStager``). Rank 0 registers one
TRAINER_RANK worker per rank with the coordinator (``dependencies["checkpoint_engine"]``),
renews their leases on a thread, concatenates the ranks' bucket plans and calls
PublishVersion. The engine workers then copy the buckets out of those buffers.

A staging buffer is read-only until the engine has gathered the version it holds: the next
publish waits (bounded) until that version left VERSION_PHASE_GATHERING. A TrainStep need not
wait, because staging is a copy (on CPU the parameters are not in shared memory).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass

import grpc

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.errors import FailedPrecondition, InvalidArgument, Unavailable
from k2rl.weights import ChecksumAlgorithm, StagedVersion, WeightStager
from k2rl.weights import proto as wire

log = logging.getLogger(__name__)

CHECKSUMS = {
    common_pb2.CHECKSUM_ALGORITHM_CRC32: ChecksumAlgorithm.CRC32,
    common_pb2.CHECKSUM_ALGORITHM_SHA256: ChecksumAlgorithm.SHA256,
    common_pb2.CHECKSUM_ALGORITHM_SUM64: ChecksumAlgorithm.SUM64,
    common_pb2.CHECKSUM_ALGORITHM_XXH3_64: ChecksumAlgorithm.XXH3_64,
}


@dataclass(frozen=True)
class RankIdentity:
    """Where a trainer rank runs, as the coordinator registers it."""

    rank: int
    node: str
    device: str


@dataclass(frozen=True)
class PublishResult:
    version: common_pb2.WeightVersion
    bucket_count: int
    duration_s: float


class RankStager:
    """One rank's staging buffer; packs this rank's share of the weights."""

    def __init__(self, rank: int) -> None:
        self._rank = rank
        self._stager: WeightStager | None = None

    def stage(self, named: list[tuple[str, object]], world_size: int, bucket_bytes: int,
              algorithm: ChecksumAlgorithm) -> StagedVersion:
        if self._stager is None or self._stager.bucket_bytes != bucket_bytes or self._stager.algorithm != algorithm:
            self.close()
            self._stager = WeightStager(bucket_bytes, algorithm, tag=f"trainer.r{self._rank}")
        share = [(name, tensor) for i, (name, tensor) in enumerate(named) if i % world_size == self._rank]
        return self._stager.stage(share)

    def close(self) -> None:
        if self._stager is not None:
            self._stager.close()
            self._stager = None


class WeightPublisher:
    """Rank 0: TRAINER_RANK registrations, lease renewal, PublishVersion, gather barrier."""

    def __init__(self, coordinator: str, options: ClientOptions, *, rpc_timeout_s: float = 30.0,
                 gather_timeout_s: float = 300.0) -> None:
        self.coordinator = coordinator
        self._stub = create_stub(checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub, coordinator, options)
        self._rpc_timeout_s = rpc_timeout_s
        self._gather_timeout_s = gather_timeout_s
        self._lock = threading.Lock()  # guards _worker_ids between publish and the lease thread
        self._worker_ids: dict[int, str] = {}
        self._ranks: list[RankIdentity] = []
        self._interval_s = 1.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.published: common_pb2.WeightVersion | None = None
        self._ungathered: int = 0  # version whose source bytes are still in the staging buffers

    # -- publish ---------------------------------------------------------------------------

    def wait_until_gathered(self) -> None:
        """Block until the engine copied the last published version out of the staging
        buffers (phase past GATHERING), so they may be overwritten."""
        version = self._ungathered
        if not version:
            return
        deadline = time.monotonic() + self._gather_timeout_s
        call = self._stub.WaitForVersion(ce.WaitForVersionRequest(min_version=version), timeout=self._gather_timeout_s)
        try:
            for message in call:
                if message.phase != ce.VERSION_PHASE_GATHERING:
                    self._ungathered = 0
                    return
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.CANCELLED:
                raise
            if error.code() == grpc.StatusCode.FAILED_PRECONDITION:
                self._ungathered = 0  # the coordinator no longer knows the version (restarted): nobody reads it
                return
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED or time.monotonic() >= deadline:
                raise Unavailable(
                    f"weight version {version} is still being gathered after {self._gather_timeout_s:.0f}s: no "
                    "checkpoint-engine worker copied it out of the trainer's staging buffers (are engine workers "
                    f"registered with {self.coordinator}?)") from None
            raise _translate(error, self.coordinator) from None
        finally:
            call.cancel()
        self._ungathered = 0  # the stream ended: the version completed or failed, the buffers are free

    def begin(self, ranks: list[RankIdentity]) -> dict[int, str]:
        """Register the ranks (first call) and wait until the staging buffers are free."""
        self.wait_until_gathered()
        with self._lock:
            if [r.rank for r in self._ranks] != [r.rank for r in ranks]:
                self._ranks = list(ranks)
                self._worker_ids = {}
            for identity in ranks:
                if identity.rank not in self._worker_ids:
                    self._worker_ids[identity.rank] = self._register(identity, len(ranks))
        if self._thread is None:
            self._thread = threading.Thread(target=self._renew_loop, name="trainer-ce-lease", daemon=True)
            self._thread.start()
        return dict(self._worker_ids)

    def publish(self, staged: list[StagedVersion], trainer_step: int, started: float) -> PublishResult:
        """PublishVersion of every rank's staged buckets (rank order) as one version."""
        request = ce.PublishVersionRequest(trainer=ce.TrainerWeightSource(world_size=len(staged)))
        for rank, version in enumerate(staged):
            request.buckets.extend(wire.planned_buckets(version, self._worker_ids[rank],
                                                        first_index=len(request.buckets)))
        request.version.trainer_step = trainer_step
        request.version.total_bytes = sum(p.bucket.byte_size for p in request.buckets)
        try:
            response = self._call_publish(request)
        except grpc.RpcError as error:
            raise _translate(error, self.coordinator) from None
        self.published = response.version
        self._ungathered = response.version.version
        log.info("published weight version %d (step %d, %d buckets, %d bytes) to %d replica(s)",
                 response.version.version, trainer_step, len(request.buckets), request.version.total_bytes,
                 response.target_replicas)
        return PublishResult(response.version, len(request.buckets), time.perf_counter() - started)

    def _call_publish(self, request: ce.PublishVersionRequest) -> ce.PublishVersionResponse:
        try:
            return self._stub.PublishVersion(request, timeout=self._rpc_timeout_s)
        except grpc.RpcError as error:
            # The coordinator forgot our ranks (restart, lease lost while we were blocked):
            # register again with new ids and retry once.
            if error.code() != grpc.StatusCode.FAILED_PRECONDITION or "trainer rank" not in (error.details() or ""):
                raise
        with self._lock:
            old_ids = dict(self._worker_ids)
            self._worker_ids = {r.rank: self._register(r, len(self._ranks)) for r in self._ranks}
        for bucket in request.buckets:
            rank = next(r for r, wid in old_ids.items() if wid == bucket.source_worker_id)
            bucket.source_worker_id = self._worker_ids[rank]
        return self._stub.PublishVersion(request, timeout=self._rpc_timeout_s)

    # -- registration ------------------------------------------------------------------------

    def _register(self, identity: RankIdentity, world_size: int) -> str:
        request = ce.RegisterWorkerRequest(
            kind=ce.WORKER_KIND_TRAINER_RANK, instance_name=f"{identity.node}/trainer-rank-{identity.rank}",
            rank=identity.rank, world_size=world_size,
            devices=[ce.Device(node=identity.node, name=identity.device)], labels={"role": "trainer"})
        try:
            response = self._stub.RegisterWorker(request, timeout=self._rpc_timeout_s)
        except grpc.RpcError as error:
            raise _translate(error, self.coordinator) from None
        self._interval_s = max(0.05, min(2.0, response.lease.ttl_ms / 1000 / 3))
        return response.worker_id

    def _renew_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            with self._lock:
                for identity in self._ranks:
                    worker_id = self._worker_ids.get(identity.rank)
                    if not worker_id:
                        continue
                    try:
                        self._stub.Heartbeat(ce.HeartbeatRequest(worker_id=worker_id), timeout=self._rpc_timeout_s)
                    except grpc.RpcError as error:
                        if error.code() == grpc.StatusCode.NOT_FOUND:
                            try:
                                self._worker_ids[identity.rank] = self._register(identity, len(self._ranks))
                            except Unavailable as unreachable:
                                log.warning("re-registering trainer rank %d: %s", identity.rank, unreachable.message)
                        else:
                            log.warning("checkpoint engine lease renewal failed: %s", error.code().name)

    def close(self) -> None:
        """Stop renewing and deregister the ranks (their leases would expire anyway)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._rpc_timeout_s)
        with self._lock:
            for worker_id in self._worker_ids.values():
                try:
                    self._stub.DeregisterWorker(ce.DeregisterWorkerRequest(worker_id=worker_id, reason="shutdown"),
                                                timeout=5)
                except grpc.RpcError as error:
                    log.info("deregistering %s: %s", worker_id, error.code().name)
            self._worker_ids.clear()
        close_stub(self._stub)


def checksum_algorithm(value: int, device_type: str) -> ChecksumAlgorithm:
    """The proto's choice, or its default: XXH3_64 on CPU, SUM64 on GPU (no D2H copy)."""
    if value == common_pb2.CHECKSUM_ALGORITHM_UNSPECIFIED:
        return ChecksumAlgorithm.SUM64 if device_type == "cuda" else ChecksumAlgorithm.XXH3_64
    if value not in CHECKSUMS:
        raise InvalidArgument(f"unknown checksum algorithm {value}", field="checksum_algorithm")
    return CHECKSUMS[value]


def this_node() -> str:
    return socket.gethostname()


def _translate(error: grpc.RpcError, coordinator: str) -> Exception:
    code = error.code()
    detail = error.details() or code.name
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(f"checkpoint engine at {coordinator} is unreachable ({code.name}: {detail})")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return FailedPrecondition(f"the checkpoint engine refused the weight plan: {detail} (is the trainer's "
                                  "publish_bucket_bytes above the engine's bucket_bytes?)")
    return FailedPrecondition(f"checkpoint engine {code.name}: {detail}")
