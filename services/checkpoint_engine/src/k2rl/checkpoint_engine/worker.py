"""An engine worker: gathers its share of a version, broadcasts every bucket to all workers
over torch.distributed, and feeds the replicas assigned to it from two IPC slots.

Pipeline (K2 Appendix G). Bucket i is owned by worker i % world_size, which gathers it
(the "H2D" copy: on CPU a copy out of the trainer's shared staging buffer or from disk,
verified against the bucket's checksum in the same pass over the bytes).
  * two_stage (default, what K2 runs): every worker gathers its whole share first into its
    share buffer (shared memory, buckets at share_offsets), then broadcast and reload
    overlap: bucket i+1 is broadcast into one slot while replicas reload bucket i from
    the other. On one node (shared_slots) there is nothing left to broadcast: the workers
    swap their share buffers' descriptors once and every replica reads every bucket
    straight from its owner's share buffer - one copy of each byte on the engine side.
    There the gather is pipelined with the reloads across processes: the workers gather
    round by round (one bucket each, in parallel), and after each round's barrier (a
    W-word all_reduce) replicas reload that round while the next one is gathered.
  * three_stage: gathering bucket i+1 into the single H2D buffer also overlaps with the
    broadcast of bucket i (a copy thread).
Data path (``WorkerSettings.data_path``, chosen at start from the nodes the workers run on):
  * broadcast (multi-node): the owner broadcasts bucket i straight from its copy-in buffer
    into slot i % 2 of every other worker (torch.distributed), and each worker's replicas
    read its own two slots. A slot is overwritten only after every replica of this worker
    acknowledged the bucket in it.
  * shared_slots (every worker on one node): no weight byte goes through the process group.
    Each worker owns two shm slots; bucket i is written once, by its owner, into the owner's
    slot (i // world_size) % 2 and every replica reads it from there (all 2 * world_size
    slots are announced in begin). Per bucket one 8-byte all_reduce carries the checksum of
    a disk bucket and doubles as the barrier that says "bucket i is written, and every
    replica released the slot bucket i + 1 will overwrite" (three_stage; two_stage reads
    the share buffers, see above). Every collective runs under the group's timeout; on any
    collective failure (a peer died) the worker reports the version FAILED, cancels its
    replica streams (they keep their previous version) and exits non-zero instead of hanging.

Tracing: the worker exports spans like a service (``otlp_endpoint`` / ``trace_file`` of its
settings) as ``checkpoint_engine_worker``. Its span of a version (gather, broadcast,
commit, and the UpdateWeights calls to its replicas inside) is a child of the
PublishVersion call whose traceparent the plan carries, so it joins the publisher's trace
(in an RL run, the iteration's); a P2P push to a late replica starts its own trace,
linked to the publish.

Control: rank 0 asks the coordinator what to do next (a long poll that answers as soon as
a version is published or a replica joins), fetches the version's plan and broadcasts both,
so all ranks run the same job: a global update for a new version, or a P2P push of the current
version to replicas that joined late (only the owners of buckets send, point to point, to
the worker serving the replica; no global broadcast).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import grpc
import torch
import torch.distributed as dist
from opentelemetry import trace
from opentelemetry.context import Context

from k2rl.checkpoint_engine.replica_push import ReplicaSession
from k2rl.checkpoint_engine.settings import WorkerSettings
from k2rl.checkpoint_engine.sources import CheckpointSource, TrainerSource
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.config import load_settings
from k2rl.core.tracing import build_tracer_provider, context_from_traceparent
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.weights import (
    DEFAULT_ALIGNMENT,
    BucketLayout,
    BufferDescriptor,
    Checksum,
    ChecksumAlgorithm,
    ChecksumMismatch,
    SharedBuffer,
    StreamingChecksum,
    compute_checksum,
    create_buffer,
    describe_shm,
    reap_orphans,
    this_node,
    verify_checksum,
)
from k2rl.weights import proto as wire

log = logging.getLogger(__name__)

TRACE_SERVICE = "checkpoint_engine_worker"  # service.name k2rl-checkpoint_engine_worker on its spans


class CollectiveFailure(RuntimeError):
    """A collective broke (peer died, timeout): this process group is unusable."""


@dataclass
class Job:
    """What every rank does next; decided by rank 0, broadcast to all."""

    kind: str  # "idle", "update", "p2p", "stop"
    version: int = 0
    replicas: list[tuple[str, str]] = field(default_factory=list)  # (worker id, address)
    plan: bytes = b""  # the version's serialized GetVersionPlanResponse, fetched once by rank 0


@dataclass
class PhaseTimes:
    seconds: dict[str, float] = field(default_factory=lambda: {"gather": 0.0, "broadcast": 0.0, "reload_wait": 0.0,
                                                                "commit": 0.0})
    bytes_gathered: int = 0  # read from the source (trainer buffers or checkpoint files) by this worker


class EngineWorker:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.rank, self.world_size = settings.rank, settings.world_size
        self.tracer_provider = build_tracer_provider(TRACE_SERVICE, settings.otlp_endpoint, settings.trace_file)
        self._tracer = self.tracer_provider.get_tracer(__name__)
        options = ClientOptions.from_settings(settings, self.tracer_provider)
        self._options = options
        self._coordinator = create_stub(checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub,
                                        settings.dependencies["checkpoint_engine"], options)
        self._worker_id = ""
        self._slots: list[SharedBuffer] = []
        self._shared: list[BufferDescriptor] | None = None  # all workers' slots when shared (one node)
        self._replica_stubs: dict[str, object] = {}  # address -> InferenceService stub, reused across versions
        self._trainer_source = TrainerSource()  # keeps the trainers' staging buffers mapped
        self._share: SharedBuffer | None = None  # two_stage: this worker's gathered share
        self._generation = 0  # of the coordinator's state, for the long poll
        self._done_version = 0
        self._retained: tuple[int, dict[int, torch.Tensor]] = (0, {})  # two-stage share of the last version
        self._attempted: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self.last_times = PhaseTimes()

    # --- lifecycle ---

    def start(self) -> None:
        reap_orphans()
        timeout = timedelta(seconds=self.settings.collective_timeout_s)
        store = dist.TCPStore(self.settings.master_addr, self.settings.master_port, self.world_size,
                              is_master=self.rank == 0, timeout=timeout)
        # A fresh prefix per group start: a restarted group never reads a previous run's keys.
        generation = self._agree_generation(store)
        dist.init_process_group("gloo", store=dist.PrefixStore(f"k2rl-ce/{generation}", store), rank=self.rank,
                                world_size=self.world_size, timeout=timeout)
        self._slots = [create_buffer(self.settings.bucket_bytes, f"ce.r{self.rank}.slot{i}") for i in range(2)]
        self._shared = self._choose_data_path()
        self._register()
        threading.Thread(target=self._heartbeat_loop, name="ce-heartbeat", daemon=True).start()

    def _choose_data_path(self) -> list[BufferDescriptor] | None:
        """Every worker's slot descriptors (rank-major) when the slots are shared, else None."""
        mine = (this_node(), [describe_shm(s) for s in self._slots])
        everyone: list[tuple[str, list[BufferDescriptor]] | None] = [None] * self.world_size
        self._collective(dist.all_gather_object, everyone, mine)
        nodes = {node for node, _ in everyone}  # type: ignore[misc]
        path = self.settings.data_path
        if path == "auto":
            path = "shared_slots" if len(nodes) == 1 else "broadcast"
        if path == "shared_slots" and len(nodes) > 1:
            raise ValueError(f"data_path shared_slots needs every engine worker on one node, got {sorted(nodes)}")
        log.info("data path %s (%d workers on %d node(s))", path, self.world_size, len(nodes))
        return [d for _, slots in everyone for d in slots] if path == "shared_slots" else None  # type: ignore[misc]

    @property
    def data_path(self) -> str:
        return "shared_slots" if self._shared is not None else "broadcast"

    def _agree_generation(self, store: dist.TCPStore) -> str:
        if self.rank == 0:
            store.set("k2rl-ce/generation", uuid.uuid4().hex)
        store.wait(["k2rl-ce/generation"])
        return store.get("k2rl-ce/generation").decode()

    @property
    def worker_id(self) -> str:
        return self._worker_id

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        try:
            if self._worker_id:
                self._coordinator.DeregisterWorker(ce.DeregisterWorkerRequest(worker_id=self._worker_id, reason="exit"),
                                                   timeout=5)
        except grpc.RpcError:
            pass
        for slot in self._slots:
            slot.close()
        if self._share is not None:
            self._share.close()
        self._trainer_source.close()
        for stub in self._replica_stubs.values():
            close_stub(stub)
        close_stub(self._coordinator)
        if dist.is_initialized():
            dist.destroy_process_group()
        self.tracer_provider.shutdown()

    def _register(self) -> None:
        request = ce.RegisterWorkerRequest(
            kind=ce.WORKER_KIND_ENGINE_WORKER, instance_name=self.settings.instance_name or f"{this_node()}/engine-{self.rank}",
            devices=[ce.Device(node=this_node(), name="cpu")], rank=self.rank, world_size=self.world_size)
        self._worker_id = self._coordinator.RegisterWorker(request, timeout=self.settings.client_timeout_s).worker_id

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self._coordinator.Heartbeat(ce.HeartbeatRequest(worker_id=self._worker_id), timeout=5)
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:
                    try:
                        self._register()
                    except grpc.RpcError:
                        log.warning("re-registration failed; retrying")

    # --- control loop ---

    def run(self) -> None:
        """Serve jobs until stopped (rank 0 decides) or a collective fails."""
        while True:
            job = [self._next_job_with_plan() if self.rank == 0 else None]
            self._collective(dist.broadcast_object_list, job, src=0)
            current: Job = job[0]  # type: ignore[assignment]
            if current.kind == "stop":
                return
            if current.kind == "idle":  # rank 0 already waited for a change (long poll)
                continue
            self._execute(current)

    def _next_job_with_plan(self) -> Job:
        """Rank 0's next job, with the plan of its version: one plan fetch for the group."""
        job = self._next_job()
        if job.kind in ("update", "p2p"):
            try:
                job.plan = self._coordinator.GetVersionPlan(ce.GetVersionPlanRequest(version=job.version),
                                                            timeout=self.settings.client_timeout_s).SerializeToString()
            except grpc.RpcError as error:
                log.warning("could not fetch the plan of version %s: %s", job.version, error.details())
                return Job("idle")
        return job

    def _next_job(self) -> Job:
        if self._stop.is_set():
            return Job("stop")
        # Every other rank waits in the job broadcast meanwhile: stay well inside its timeout.
        wait_s = min(self.settings.poll_interval_s, self.settings.collective_timeout_s / 4)
        try:
            status = self._coordinator.GetVersion(
                ce.GetVersionRequest(changed_since=self._generation, wait_ms=int(wait_s * 1000)), timeout=wait_s + 5)
        except grpc.RpcError:
            self._stop.wait(wait_s)
            return Job("idle")
        self._generation = status.generation
        latest = status.latest_version.version
        live = [r for r in status.replicas if r.live]
        if latest > self._done_version and status.latest_phase in (ce.VERSION_PHASE_GATHERING, ce.VERSION_PHASE_DISTRIBUTING):
            targets = [(r.worker_id, r.address) for r in live if r.weight_version < latest]
            return Job("update", latest, targets)
        if self._done_version and latest == self._done_version:
            late = [(r.worker_id, r.address) for r in live if r.weight_version < latest
                    and (r.worker_id, latest) not in self._attempted]
            if late:
                return Job("p2p", latest, late)
        return Job("idle")

    def _execute(self, job: Job) -> None:
        self._attempted.update((replica, job.version) for replica, _ in job.replicas)
        plan = ce.GetVersionPlanResponse.FromString(job.plan)
        try:
            self.update(plan, job.replicas, p2p=job.kind == "p2p")
        except CollectiveFailure as failure:
            self._report(job.version, ce.VERSION_PHASE_FAILED, 0, error=common_pb2.ErrorDetail(
                code="ENGINE_WORKER_FAILED", message=str(failure), retryable=True))
            raise
        self._done_version = max(self._done_version, job.version)

    # --- one version ---

    def update(self, plan: ce.GetVersionPlanResponse, replicas: list[tuple[str, str]], p2p: bool = False) -> PhaseTimes:
        """Run one version on this rank. ``replicas`` is the job's full list, the same on every
        rank; replica i is fed by rank i % world_size."""
        with self._version_span(plan, p2p, len(replicas)) as span:
            times = self._update(plan, replicas, p2p)
            span.set_attribute("k2rl.engine.bytes_gathered", times.bytes_gathered)
            return times

    def _version_span(self, plan: ce.GetVersionPlanResponse, p2p: bool, replicas: int) -> AbstractContextManager[trace.Span]:
        publish = context_from_traceparent(plan.trace_parent)
        attributes = {"k2rl.weight_version": plan.version.version, "k2rl.engine.rank": self.rank,
                      "k2rl.engine.world_size": self.world_size, "k2rl.engine.buckets": len(plan.buckets),
                      "k2rl.engine.replicas": replicas, "k2rl.engine.data_path": self.data_path,
                      "k2rl.engine.pipeline": self.settings.pipeline}
        if not p2p:
            return self._tracer.start_as_current_span("engine_worker.update", context=publish, attributes=attributes)
        published = trace.get_current_span(publish).get_span_context()
        return self._tracer.start_as_current_span(
            "engine_worker.p2p", context=Context(), attributes=attributes,
            links=[trace.Link(published)] if published.is_valid else [])

    def _span(self, phase: str) -> AbstractContextManager[trace.Span]:
        return self._tracer.start_as_current_span(f"engine_worker.{phase}")

    def _update(self, plan: ce.GetVersionPlanResponse, replicas: list[tuple[str, str]], p2p: bool) -> PhaseTimes:
        version = plan.version.version
        buckets = [wire.bucket_from_proto(p.bucket) for p in plan.buckets]
        times = PhaseTimes()
        if plan.HasField("checkpoint"):
            source: CheckpointSource | TrainerSource = CheckpointSource(plan.checkpoint.path)
        else:
            source = self._trainer_source
            source.keep_only(plan.buckets)
        serving = {i % self.world_size for i in range(len(replicas))}
        mine = [r for i, r in enumerate(replicas) if i % self.world_size == self.rank]
        # two_stage on one node: replicas read the share buffers while they are being filled
        direct = self._shared is not None and self.settings.pipeline == "two_stage"
        sessions: list[ReplicaSession] = [] if direct else self._open_sessions(plan.version, len(buckets), mine)
        started: grpc.Future | None = None
        try:
            retained = self._retained[1] if p2p and self._retained[0] == version else None
            if direct:
                owned, started = self._gather_and_serve(plan, buckets, source, retained, mine, sessions, times, p2p)
            else:
                if retained is not None:
                    owned = retained  # the trainer may have reused its buffers since
                elif self.settings.pipeline == "two_stage":
                    with self._span("gather"):
                        owned = self._gather(plan, buckets, source, times)
                else:
                    owned = {}
                if not p2p:
                    started = self._report_started(version, times)
                with self._span("broadcast"):  # and the replicas' reloads, which overlap it
                    if self._shared is not None:
                        self._distribute_shared(plan, buckets, source, owned, sessions, times)
                    else:
                        self._distribute(plan, buckets, source, owned, sessions, times, serving if p2p else None)
            self._retained = (version, owned) if owned else (0, {})
            start = time.perf_counter()
            with self._span("commit"):
                for session in sessions:
                    session.commit(version, len(buckets))
                for session in sessions:
                    session.wait_result()
            times.seconds["commit"] += time.perf_counter() - start
        except BaseException:
            for session in sessions:
                session.cancel("the engine worker failed the update")
            raise
        finally:
            if source is not self._trainer_source:
                source.close()
        if started is not None:
            self._settle(started, version)
        self._report_replicas(version, sessions)
        if not p2p:
            self._report(version, ce.VERSION_PHASE_COMPLETE, sum(b.byte_size for b in buckets), times)
        self.last_times = times
        return times

    def _open_sessions(self, version: common_pb2.WeightVersion, bucket_count: int, replicas: list[tuple[str, str]],
                       shares: list[BufferDescriptor] = ()) -> list[ReplicaSession]:
        """Begin an UpdateWeights stream per replica; slots are every bucket slot (rank-major),
        then each worker's share buffer (slot ``share_slot(rank)``) when given."""
        descriptors = self._shared if self._shared is not None else [describe_shm(s) for s in self._slots]
        descriptors = [*descriptors, *shares]
        slots = [inference_pb2.IpcSlot(slot=i, handle=wire.descriptor_to_proto(d)) for i, d in enumerate(descriptors)]
        begin = inference_pb2.UpdateWeightsBegin(version=version, bucket_count=bucket_count, slots=slots,
                                                 in_flight_policy=inference_pb2.IN_FLIGHT_POLICY_PAUSE)
        sessions = []
        for replica_id, address in replicas:
            stub = self._replica_stubs.get(address)
            if stub is None:
                stub = self._replica_stubs[address] = create_stub(inference_pb2_grpc.InferenceServiceStub, address,
                                                                  self._options)
            sessions.append(ReplicaSession(stub, replica_id, begin, self.settings.replica_timeout_s))
        return sessions

    def _owner(self, index: int) -> int:
        return index % self.world_size

    def _share_offsets(self, buckets: list[BucketLayout]) -> dict[int, int]:
        """Where each bucket sits in its owner's share buffer: the owner's buckets back to
        back in index order, each aligned (so typed views of its tensors stay aligned)."""
        offsets, ends = {}, [0] * self.world_size
        for bucket in buckets:
            owner = self._owner(bucket.index)
            offsets[bucket.index] = ends[owner]
            ends[owner] = -(-(ends[owner] + bucket.byte_size) // DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT
        return offsets

    def _share_slot(self, rank: int) -> int:
        assert self._shared is not None
        return len(self._shared) + rank

    def _share_buffer(self, buckets: list[BucketLayout], offsets: dict[int, int]) -> SharedBuffer:
        """This worker's share buffer (shared memory), reused while large enough."""
        total = max((offsets[b.index] + b.byte_size for b in buckets if self._owner(b.index) == self.rank), default=1)
        if self._share is None or self._share.byte_size < total:
            if self._share is not None:
                self._share.close()  # views retained for P2P keep the old mapping alive
            self._share = create_buffer(total, f"ce.r{self.rank}.share")
        return self._share

    def _gather(self, plan: ce.GetVersionPlanResponse, buckets: list[BucketLayout], source: object,
                times: PhaseTimes) -> dict[int, torch.Tensor]:
        """Two-stage step 1 (broadcast data path): copy this worker's whole share in one go
        (the H2D stage) into its share buffer."""
        start = time.perf_counter()
        offsets = self._share_offsets(buckets)
        share = self._share_buffer(buckets, offsets)
        owned = {}
        for bucket in buckets:
            if self._owner(bucket.index) == self.rank:
                region = share.tensor[offsets[bucket.index]:offsets[bucket.index] + bucket.byte_size]
                self._load(plan, bucket, source, region, times)
                owned[bucket.index] = region
        times.seconds["gather"] += time.perf_counter() - start
        return owned

    def _gather_and_serve(self, plan: ce.GetVersionPlanResponse, buckets: list[BucketLayout], source: object,
                          retained: dict[int, torch.Tensor] | None, replicas: list[tuple[str, str]],
                          sessions: list[ReplicaSession], times: PhaseTimes, p2p: bool
                          ) -> tuple[dict[int, torch.Tensor], grpc.Future | None]:
        """Two-stage on one node, gather and reload pipelined across processes. Round r is
        buckets r*W .. r*W+W-1, one per worker: every worker copies its bucket of the round
        into its share buffer (all in parallel), one W-word all_reduce says "the round is
        written" (and carries the digests of disk buckets), then every replica is told the
        round's buckets, where they sit in their owners' share buffers, and reloads them
        while the next round is gathered. Nothing in a share buffer is overwritten before
        the version ends, so a slow replica never holds the workers back.

        Returns this worker's gathered (or ``retained``) buckets and the pending DISTRIBUTING
        report (sent once the first round is out, without waiting for its answer)."""
        gather_span = self._tracer.start_span("engine_worker.gather")  # overlaps broadcast; ends once all is gathered
        try:
            with self._span("broadcast"):
                return self._pipeline_shares(plan, buckets, source, retained, replicas, sessions, times, p2p, gather_span)
        finally:
            if gather_span.is_recording():  # the update failed before every share was gathered
                gather_span.end()

    def _pipeline_shares(self, plan: ce.GetVersionPlanResponse, buckets: list[BucketLayout], source: object,
                         retained: dict[int, torch.Tensor] | None, replicas: list[tuple[str, str]],
                         sessions: list[ReplicaSession], times: PhaseTimes, p2p: bool, gather_span: trace.Span
                         ) -> tuple[dict[int, torch.Tensor], grpc.Future | None]:
        world, seconds = self.world_size, times.seconds
        offsets = self._share_offsets(buckets)
        share = self._share_buffer(buckets, offsets)
        everyone: list[BufferDescriptor | None] = [None] * world
        start = time.perf_counter()
        self._collective(dist.all_gather_object, everyone, describe_shm(share))
        seconds["broadcast"] += time.perf_counter() - start
        sessions.extend(self._open_sessions(plan.version, len(buckets), replicas, everyone))  # type: ignore[arg-type]
        from_disk = plan.HasField("checkpoint")
        owned = dict(retained or {})
        digests = torch.zeros(world, dtype=torch.int64)
        started = None
        for first in range(0, len(buckets), world):
            digests.zero_()
            index = first + self.rank
            if index < len(buckets):
                if index not in owned:
                    start = time.perf_counter()
                    region = share.tensor[offsets[index]:offsets[index] + buckets[index].byte_size]
                    self._load(plan, buckets[index], source, region, times)
                    owned[index] = region
                    seconds["gather"] += time.perf_counter() - start
                if from_disk:
                    digest = compute_checksum(owned[index], ChecksumAlgorithm.SUM64).digest
                    digests[self.rank] = torch.frombuffer(bytearray(digest), dtype=torch.int64)[0]
            start = time.perf_counter()
            self._collective(dist.all_reduce, digests)  # each owner's digest; everyone else adds 0
            seconds["broadcast"] += time.perf_counter() - start
            for bucket in buckets[first:first + world]:
                owner = self._owner(bucket.index)
                if from_disk:
                    bucket = bucket.with_checksum(Checksum(ChecksumAlgorithm.SUM64, digests[owner].numpy().tobytes()))
                    buckets[bucket.index] = bucket
                for session in sessions:
                    session.send_bucket(bucket, self._share_slot(owner), offsets[bucket.index])
            if started is None and not p2p:
                started = self._report_started(plan.version.version, times)
        gather_span.end()
        if started is None and not p2p:  # a plan without buckets
            started = self._report_started(plan.version.version, times)
        wait = time.perf_counter()
        for session in sessions:
            session.wait_acked(len(buckets) - 1)
        seconds["reload_wait"] += time.perf_counter() - wait
        return owned, started

    def _load(self, plan: ce.GetVersionPlanResponse, bucket: BucketLayout, source: object, out: torch.Tensor,
              times: PhaseTimes) -> None:
        if isinstance(source, TrainerSource):
            expected = bucket.checksum if self.settings.verify_source_checksums else None
            digest = None  # hashed during the copy when the algorithm streams and the bytes are on the host
            if expected is not None and out.device.type == "cpu" and StreamingChecksum.streams(expected.algorithm):
                digest = StreamingChecksum(expected.algorithm)
            source.copy_bucket(plan.buckets[bucket.index], bucket, out, digest)
            times.bytes_gathered += bucket.byte_size
            if expected is not None:
                what = f"bucket {bucket.index} at its source"
                try:
                    if digest is None:
                        verify_checksum(out[:bucket.byte_size], expected, what)
                    elif digest.checksum() != expected:
                        raise ChecksumMismatch(f"{what}: checksum {digest.checksum().hex()} != expected {expected.hex()}")
                except ChecksumMismatch as error:
                    raise CollectiveFailure(str(error)) from None
        else:
            assert isinstance(source, CheckpointSource)
            times.bytes_gathered += source.copy_bucket(bucket, out)

    def _distribute(self, plan: ce.GetVersionPlanResponse, buckets: list[BucketLayout], source: object,
                    owned: dict[int, torch.Tensor], sessions: list[ReplicaSession], times: PhaseTimes,
                    p2p_ranks: set[int] | None) -> None:
        copier = ThreadPoolExecutor(1, thread_name_prefix="ce-h2d") if not owned else None
        pending: Future[torch.Tensor] | None = None
        h2d = [torch.empty(self.settings.bucket_bytes, dtype=torch.uint8) for _ in range(2)] if copier else []
        try:
            if copier:
                pending = self._prefetch(copier, plan, buckets, source, h2d, -1, times)
            for bucket in buckets:
                slot = bucket.index % 2
                data = self._slots[slot].tensor[:bucket.byte_size]
                wait = time.perf_counter()
                if bucket.index >= 2:
                    for session in sessions:
                        session.wait_acked(bucket.index - 2)
                times.seconds["reload_wait"] += time.perf_counter() - wait
                start = time.perf_counter()
                if self._owner(bucket.index) == self.rank:
                    # Broadcast straight from the copy-in buffer; the slot gets a copy only
                    # when this worker feeds replicas itself.
                    if copier:
                        assert pending is not None
                        staged = pending.result(timeout=self.settings.collective_timeout_s)[:bucket.byte_size]
                        # the next owned bucket goes into the other H2D buffer: overlaps this broadcast
                        pending = self._prefetch(copier, plan, buckets, source, h2d, bucket.index, times)
                    else:
                        staged = owned[bucket.index]
                    checksum = self._move(bucket, staged, p2p_ranks, plan)
                    if sessions:
                        data.copy_(staged)
                else:
                    checksum = self._move(bucket, data, p2p_ranks, plan)
                times.seconds["broadcast"] += time.perf_counter() - start
                if checksum is not None:
                    bucket = bucket.with_checksum(checksum)
                    buckets[bucket.index] = bucket
                for session in sessions:
                    session.send_bucket(bucket, slot)
            wait = time.perf_counter()
            for session in sessions:
                session.wait_acked(len(buckets) - 1)
            times.seconds["reload_wait"] += time.perf_counter() - wait
        finally:
            if copier:
                copier.shutdown(wait=True, cancel_futures=True)

    def _distribute_shared(self, plan: ce.GetVersionPlanResponse, buckets: list[BucketLayout], source: object,
                           owned: dict[int, torch.Tensor], sessions: list[ReplicaSession], times: PhaseTimes) -> None:
        """shared_slots data path: the owner writes each bucket once into its own slot, every
        replica reads it there; the process group carries 8 bytes per bucket.

        Slot of bucket i: owner * 2 + (i // world_size) % 2, so bucket i + 2 * world_size is
        the next to overwrite it. Before the all_reduce of bucket i every rank waits until its
        replicas acknowledged bucket i + 1 - 2 * world_size; after it, the owner of bucket
        i + 1 may overwrite that slot, and bucket i is written (its owner wrote it before
        joining). Replicas reload bucket i while bucket i + 1 is being written.
        """
        world, seconds = self.world_size, times.seconds
        from_disk = plan.HasField("checkpoint")
        meta = torch.zeros(1, dtype=torch.int64)
        for bucket in buckets:
            index = bucket.index
            owner = self._owner(index)
            meta.zero_()
            if owner == self.rank:
                start = time.perf_counter()
                data = self._slots[(index // world) % 2].tensor[:bucket.byte_size]
                if index in owned:
                    data.copy_(owned[index])
                    seconds["broadcast"] += time.perf_counter() - start
                else:  # three-stage: straight from the source into the slot, no H2D buffer
                    self._load(plan, bucket, source, data, times)
                    seconds["gather"] += time.perf_counter() - start
                if from_disk:
                    digest = compute_checksum(data, ChecksumAlgorithm.SUM64).digest
                    meta.copy_(torch.frombuffer(bytearray(digest), dtype=torch.int64))
            wait = time.perf_counter()
            released = index + 1 - 2 * world
            if released >= 0:
                for session in sessions:
                    session.wait_acked(released)
            seconds["reload_wait"] += time.perf_counter() - wait
            start = time.perf_counter()
            self._collective(dist.all_reduce, meta)  # the owner's digest; everyone else adds 0
            seconds["broadcast"] += time.perf_counter() - start
            if from_disk:
                bucket = bucket.with_checksum(Checksum(ChecksumAlgorithm.SUM64, meta.numpy().tobytes()))
                buckets[index] = bucket
            for session in sessions:
                session.send_bucket(bucket, owner * 2 + (index // world) % 2)
        wait = time.perf_counter()
        for session in sessions:
            session.wait_acked(len(buckets) - 1)
        seconds["reload_wait"] += time.perf_counter() - wait

    def _prefetch(self, copier: ThreadPoolExecutor, plan: ce.GetVersionPlanResponse, buckets: list[BucketLayout],
                  source: object, h2d: list[torch.Tensor], after: int, times: PhaseTimes) -> Future[torch.Tensor] | None:
        """Three-stage: start copying this worker's next owned bucket after ``after``."""
        following = [b for b in buckets[after + 1:] if self._owner(b.index) == self.rank]
        if not following:
            return None
        bucket = following[0]
        out = h2d[(bucket.index // self.world_size) % 2]
        return copier.submit(lambda: (self._load(plan, bucket, source, out, times), out)[1])

    def _move(self, bucket: BucketLayout, data: torch.Tensor, p2p_ranks: set[int] | None,
              plan: ce.GetVersionPlanResponse) -> Checksum | None:
        """Broadcast one bucket to every worker, or for P2P send it only to ``p2p_ranks``
        (the workers serving late replicas). Returns its checksum when the engine computed
        it (a checkpoint source has none in its plan)."""
        owner = self._owner(bucket.index)
        from_disk = plan.HasField("checkpoint")
        digest = torch.zeros(8, dtype=torch.uint8)
        if from_disk and self.rank == owner:
            digest.copy_(torch.frombuffer(bytearray(compute_checksum(data, ChecksumAlgorithm.SUM64).digest),
                                          dtype=torch.uint8))
        if p2p_ranks is None:
            self._collective(dist.broadcast, data, src=owner)
            if from_disk:
                self._collective(dist.broadcast, digest, src=owner)
        else:
            if self.rank == owner:
                for rank in sorted(p2p_ranks):
                    if rank != owner:
                        self._collective(dist.send, data, dst=rank)
                        if from_disk:
                            self._collective(dist.send, digest, dst=rank)
            elif self.rank in p2p_ranks:
                self._collective(dist.recv, data, src=owner)
                if from_disk:
                    self._collective(dist.recv, digest, src=owner)
        if not from_disk:
            return None
        return Checksum(ChecksumAlgorithm.SUM64, bytes(digest.tolist()))

    def _collective(self, op: Callable[..., object], *args: object, **kwargs: object) -> None:
        try:
            op(*args, **kwargs)
        except (RuntimeError, dist.DistBackendError) as error:
            raise CollectiveFailure(f"engine worker rank {self.rank}: collective failed ({error}); "
                                    "a peer worker died or timed out") from error

    def _report(self, version: int, phase: int, bytes_moved: int, times: PhaseTimes | None = None,
                error: common_pb2.ErrorDetail | None = None) -> None:
        request = ce.ReportVersionProgressRequest(reporter_worker_id=self._worker_id, version=version, phase=phase,
                                                  bytes_distributed=bytes_moved, error=error,
                                                  phase_seconds=times.seconds if times else {},
                                                  bytes_gathered=times.bytes_gathered if times else 0)
        try:
            self._coordinator.ReportVersionProgress(request, timeout=self.settings.client_timeout_s)
        except grpc.RpcError as rpc_error:
            log.warning("could not report progress of version %s: %s", version, rpc_error.details())

    def _report_started(self, version: int, times: PhaseTimes) -> grpc.Future:
        """Report DISTRIBUTING without waiting for the answer (``_settle`` collects it): the
        update goes on meanwhile instead of stalling a round trip."""
        request = ce.ReportVersionProgressRequest(reporter_worker_id=self._worker_id, version=version,
                                                  phase=ce.VERSION_PHASE_DISTRIBUTING, phase_seconds=times.seconds,
                                                  bytes_gathered=times.bytes_gathered)
        return self._coordinator.ReportVersionProgress.future(request, timeout=self.settings.client_timeout_s)

    def _settle(self, report: grpc.Future, version: int) -> None:
        """Wait for a report from ``_report_started`` (before the replicas' outcomes, which
        the coordinator reads after it)."""
        try:
            report.result()
        except grpc.RpcError as rpc_error:
            log.warning("could not report progress of version %s: %s", version, rpc_error.details())

    def _report_replicas(self, version: int, sessions: list[ReplicaSession]) -> None:
        for session in sessions:
            result = session.result
            if result is not None:
                outcome, error = result.outcome, result.error if result.HasField("error") else None
                loaded, duration = result.bytes_loaded, result.duration_ms
            else:
                outcome = common_pb2.WEIGHT_UPDATE_OUTCOME_TRANSFER_FAILED
                error = common_pb2.ErrorDetail(code="TRANSFER_FAILED", message=session.error or "no result",
                                               retryable=True)
                loaded, duration = 0, 0.0
            try:
                self._coordinator.ReportUpdate(ce.ReportUpdateRequest(
                    reporter_worker_id=self._worker_id, replica_worker_id=session.replica_id, version=version,
                    outcome=outcome, error=error, bytes_loaded=loaded, duration_ms=duration),
                    timeout=self.settings.client_timeout_s)
            except grpc.RpcError as rpc_error:
                log.warning("could not report replica %s: %s", session.replica_id, rpc_error.details())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="k2rl checkpoint engine worker")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--coordinator", help="host:port of the checkpoint_engine service")
    for name in ("rank", "world_size", "master_port", "bucket_bytes"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int)
    parser.add_argument("--pipeline", choices=["two_stage", "three_stage"])
    parser.add_argument("--data-path", choices=["auto", "shared_slots", "broadcast"])
    parser.add_argument("--collective-timeout-s", type=float)
    parser.add_argument("--replica-timeout-s", type=float)
    parser.add_argument("--no-verify-source-checksums", action="store_true")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if k not in {"config", "coordinator", "no_verify_source_checksums"}}
    if args.coordinator:
        overrides["dependencies"] = {"checkpoint_engine": args.coordinator}
    if args.no_verify_source_checksums:
        overrides["verify_source_checksums"] = False
    settings = load_settings(WorkerSettings, "checkpoint_engine", args.config, overrides)
    logging.basicConfig(level=settings.log_level, format=f"%(asctime)s engine-worker[{settings.rank}] %(message)s")
    worker = EngineWorker(settings)
    signal.signal(signal.SIGTERM, lambda *_: worker.stop())
    worker.start()
    print(f"ready {worker.worker_id}", flush=True)
    try:
        worker.run()
    except CollectiveFailure as failure:
        log.error("%s; exiting", failure)
        return 3
    finally:
        worker.stop()
        worker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
