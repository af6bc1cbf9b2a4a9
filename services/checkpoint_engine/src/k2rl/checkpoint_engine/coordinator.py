"""The coordinator's domain state: registered workers with leases, and weight versions.

Versions: ``PublishVersion`` numbers a version (latest + 1) and stores its plan; engine
workers gather and broadcast it and report progress; replicas' outcomes arrive through
``ReportUpdate``. A version is COMPLETE when every live targeted replica serves it (the
"version bumps only when every bucket landed" rule: a replica reports APPLIED only after
its receiver verified every bucket), FAILED when an engine worker reports a failure or a
newer version supersedes it first.

Durability: the latest version (number, metadata, phase) and its plan are in the state
store, so a restarted coordinator keeps numbering upward and can still serve restarted
replicas. Workers are not persisted: after a restart their heartbeats get NOT_FOUND and
they register again (with the version they hold).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from google.protobuf.timestamp_pb2 import Timestamp

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.common.v1 import common_pb2
from k2rl.core.errors import FailedPrecondition, InvalidArgument, NotFound
from k2rl.core.store import StateStore

PLAN_KEY = "versions/latest/plan"
REPLICA = ce.WORKER_KIND_INFERENCE_REPLICA
ENGINE = ce.WORKER_KIND_ENGINE_WORKER
SUCCESS = (common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED, common_pb2.WEIGHT_UPDATE_OUTCOME_ALREADY_CURRENT)


@dataclass
class Worker:
    worker_id: str
    request: ce.RegisterWorkerRequest
    expires_at: float
    weight_version: int
    last_outcome: int = common_pb2.WEIGHT_UPDATE_OUTCOME_UNSPECIFIED
    last_error: common_pb2.ErrorDetail | None = None
    last_update_time: float = 0.0

    @property
    def kind(self) -> int:
        return self.request.kind

    def live(self, now: float) -> bool:
        return now < self.expires_at


@dataclass
class VersionState:
    plan: ce.GetVersionPlanResponse  # version, phase, source, buckets
    gathered: set[str] = field(default_factory=set)  # engine worker ids
    distributed: dict[str, int] = field(default_factory=dict)  # engine worker id -> bytes
    finished: set[str] = field(default_factory=set)  # engine workers done pushing to their replicas
    error: common_pb2.ErrorDetail | None = None

    @property
    def number(self) -> int:
        return self.plan.version.version


def _timestamp(seconds: float) -> Timestamp:
    stamp = Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


class Coordinator:
    """Thread-safe; every RPC handler thread calls into one instance."""

    def __init__(self, store: StateStore, lease_ttl_ms: int, clock: Callable[[], float] = time.time,
                 on_progress: Callable[[ce.ReportVersionProgressRequest], None] | None = None) -> None:
        self._store = store
        self._on_progress = on_progress
        self._ttl_s = lease_ttl_ms / 1000
        self._clock = clock
        self._workers: dict[str, Worker] = {}
        self._changed = threading.Condition()
        self._generation = 0  # bumped with every notification of a change
        self._latest: VersionState | None = self._load_latest()

    # --- workers ---

    def register(self, request: ce.RegisterWorkerRequest) -> tuple[Worker, ce.Lease, common_pb2.WeightVersion]:
        if request.kind == ce.WORKER_KIND_UNSPECIFIED or request.kind not in ce.WorkerKind.values():
            raise InvalidArgument("must be TRAINER_RANK, ENGINE_WORKER or INFERENCE_REPLICA", field="kind")
        if not request.instance_name:
            raise InvalidArgument("must name the worker stably across restarts", field="instance_name")
        if request.kind == REPLICA and not request.address:
            raise InvalidArgument("an inference replica must give the address of its InferenceService", field="address")
        if request.world_size and request.rank >= request.world_size:
            raise InvalidArgument(f"rank {request.rank} is not below world_size {request.world_size}", field="rank")
        with self._changed:
            now = self._clock()
            for old_id, old in list(self._workers.items()):
                if old.request.instance_name == request.instance_name and old.kind == request.kind:
                    del self._workers[old_id]
            worker = Worker(f"{_kind_prefix(request.kind)}-{uuid.uuid4().hex[:12]}", request, now + self._ttl_s,
                            request.weight_version)
            self._workers[worker.worker_id] = worker
            self._bump()
            return worker, self._lease(worker), self._latest_version()

    def heartbeat(self, worker_id: str, weight_version: int) -> tuple[ce.Lease, common_pb2.WeightVersion]:
        with self._changed:
            worker = self._live_worker(worker_id)
            worker.expires_at = self._clock() + self._ttl_s
            if worker.kind == REPLICA and worker.weight_version != weight_version:
                worker.weight_version = weight_version
                self._bump()
            return self._lease(worker), self._latest_version()

    def deregister(self, worker_id: str) -> None:
        with self._changed:
            if self._workers.pop(worker_id, None) is None:
                raise NotFound(f"worker {worker_id!r} is not registered", field="worker_id")
            self._bump()

    def worker(self, worker_id: str) -> Worker:
        with self._changed:
            return self._live_worker(worker_id)

    def live_workers(self, kind: int) -> list[Worker]:
        with self._changed:
            now = self._clock()
            return [w for w in self._workers.values() if w.kind == kind and w.live(now)]

    # --- versions ---

    def publish(self, plan: ce.GetVersionPlanResponse, explicit_version: int) -> tuple[common_pb2.WeightVersion, int]:
        """Number and store a validated plan; return the accepted version and target replicas."""
        with self._changed:
            latest = self._latest.number if self._latest else 0
            if explicit_version and explicit_version <= latest:
                raise FailedPrecondition(f"version {explicit_version} is not above the latest published {latest}",
                                         field="version.version")
            if plan.HasField("trainer"):
                self._check_sources(plan)
            plan.version.version = explicit_version or latest + 1
            plan.version.publish_time.CopyFrom(_timestamp(self._clock()))
            plan.phase = ce.VERSION_PHASE_GATHERING
            if self._latest is not None and self._latest.plan.phase in (ce.VERSION_PHASE_GATHERING, ce.VERSION_PHASE_DISTRIBUTING):
                self._latest.plan.phase = ce.VERSION_PHASE_FAILED
                self._latest.error = common_pb2.ErrorDetail(code="SUPERSEDED", message=(
                    f"version {latest} was superseded by {plan.version.version} before it completed"))
            self._latest = VersionState(plan)
            self._persist()
            self._bump()
            return plan.version, len(self._live(REPLICA))

    def plan(self, version: int) -> ce.GetVersionPlanResponse:
        with self._changed:
            state = self._state(version)
            response = ce.GetVersionPlanResponse()
            response.CopyFrom(state.plan)
            return response

    def report_progress(self, request: ce.ReportVersionProgressRequest) -> int:
        with self._changed:
            worker = self._live_worker(request.reporter_worker_id)
            if worker.kind != ENGINE:
                raise FailedPrecondition("only engine workers report version progress", field="reporter_worker_id")
            state = self._state(request.version)
            if self._on_progress is not None:
                self._on_progress(request)
            if state.plan.phase in (ce.VERSION_PHASE_FAILED, ce.VERSION_PHASE_COMPLETE):
                return state.plan.phase
            before = state.plan.phase
            if request.phase == ce.VERSION_PHASE_FAILED:
                state.plan.phase = ce.VERSION_PHASE_FAILED
                state.error = request.error
            elif request.phase in (ce.VERSION_PHASE_DISTRIBUTING, ce.VERSION_PHASE_COMPLETE):
                state.gathered.add(worker.worker_id)
                state.distributed[worker.worker_id] = request.bytes_distributed
                engines = {w.worker_id for w in self._live(ENGINE)}
                if state.plan.phase == ce.VERSION_PHASE_GATHERING and engines <= state.gathered:
                    state.plan.phase = ce.VERSION_PHASE_DISTRIBUTING
                if request.phase == ce.VERSION_PHASE_COMPLETE:
                    state.finished.add(worker.worker_id)
                    self._complete_if_done(state)
            self._persist_if_ended(state, before)
            self._bump()
            return state.plan.phase

    def report_update(self, request: ce.ReportUpdateRequest) -> tuple[common_pb2.WeightVersion, bool]:
        with self._changed:
            self._live_worker(request.reporter_worker_id)
            replica = self._live_worker(request.replica_worker_id)
            if replica.kind != REPLICA:
                raise FailedPrecondition(f"worker {replica.worker_id} is not an inference replica", field="replica_worker_id")
            if request.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_UNSPECIFIED:
                raise InvalidArgument("must say what happened", field="outcome")
            replica.last_outcome = request.outcome
            replica.last_error = request.error if request.HasField("error") else None
            replica.last_update_time = self._clock()
            if request.outcome in SUCCESS:
                replica.weight_version = max(replica.weight_version, request.version)
            elif request.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_DISCARDED:
                replica.weight_version = 0
            if self._latest is not None and self._latest.plan.phase == ce.VERSION_PHASE_DISTRIBUTING:
                self._complete_if_done(self._latest)
                self._persist_if_ended(self._latest, ce.VERSION_PHASE_DISTRIBUTING)
            self._bump()
            will_retry = request.outcome == common_pb2.WEIGHT_UPDATE_OUTCOME_DISCARDED
            return self._latest_version(), will_retry

    def status(self, changed_since: int = 0, wait_s: float = 0.0) -> ce.GetVersionResponse:
        """The current state; with ``wait_s``, first wait (at most that long) until it
        differs from generation ``changed_since`` (a long poll)."""
        with self._changed:
            if wait_s > 0:
                self._changed.wait_for(lambda: self._generation != changed_since, timeout=wait_s)
            return self._status()

    def wait(self, min_version: int, replica_ids: list[str], is_active: Callable[[], bool],
             poll_s: float = 0.5) -> Iterator[ce.WaitForVersionResponse]:
        """Progress messages until the replicas serve ``min_version`` (or it fails).

        ``is_active`` is polled so a cancelled call stops waiting; the caller's deadline
        bounds the wait.
        """
        with self._changed:
            target = min_version or (self._latest.number if self._latest else 0)
            unknown = [r for r in replica_ids if r not in self._workers]
            if unknown:
                raise NotFound(f"replicas not registered: {', '.join(unknown)}", field="replica_worker_ids")
            if target and (self._latest is None or target > self._latest.number):
                raise FailedPrecondition(f"version {target} has not been published", field="min_version")
        previous: dict[str, tuple[int, int]] = {}
        last_phase = None
        while is_active():
            with self._changed:
                message, previous, done = self._progress(target, replica_ids, previous)
                if message.phase != last_phase or message.changed_replicas or done:
                    last_phase = message.phase
                    yield message
                if done:
                    return
                self._changed.wait(poll_s)

    # --- internals (caller holds the lock) ---

    def _bump(self) -> None:
        self._generation += 1
        self._changed.notify_all()

    def _progress(self, target: int, replica_ids: list[str], previous: dict[str, tuple[int, int]]
                  ) -> tuple[ce.WaitForVersionResponse, dict[str, tuple[int, int]], bool]:
        now = self._clock()
        waited = [w for w in self._workers.values() if w.kind == REPLICA and w.live(now)
                  and (not replica_ids or w.worker_id in replica_ids)]
        ready = [w for w in waited if w.weight_version >= target]
        state = self._latest if self._latest and self._latest.number == target else None
        phase = state.plan.phase if state else ce.VERSION_PHASE_COMPLETE
        if ready and len(ready) == len(waited) and phase != ce.VERSION_PHASE_FAILED:
            phase = ce.VERSION_PHASE_COMPLETE
        elif phase == ce.VERSION_PHASE_COMPLETE and len(ready) < len(waited):
            phase = ce.VERSION_PHASE_DISTRIBUTING
        current = {w.worker_id: (w.weight_version, w.last_outcome) for w in waited}
        changed = [self._replica_proto(w, now) for w in waited if previous.get(w.worker_id) != current[w.worker_id]]
        message = ce.WaitForVersionResponse(
            version=target, phase=phase, replicas_ready=len(ready), replicas_total=len(waited),
            bytes_distributed=sum(state.distributed.values()) if state else 0, changed_replicas=changed,
            error=state.error if state and state.error else None)
        return message, current, phase in (ce.VERSION_PHASE_COMPLETE, ce.VERSION_PHASE_FAILED)

    def _complete_if_done(self, state: VersionState) -> None:
        """COMPLETE once every live replica serves the version; FAILED once every engine
        worker finished pushing and a replica refused it (it keeps its previous version)."""
        replicas = self._live(REPLICA)
        engines = {w.worker_id for w in self._live(ENGINE)}
        if engines <= state.gathered and all(r.weight_version >= state.number for r in replicas):
            state.plan.phase = ce.VERSION_PHASE_COMPLETE
            return
        refused = [r for r in replicas if r.weight_version < state.number and r.last_outcome not in SUCCESS
                   and r.last_update_time and r.last_outcome != common_pb2.WEIGHT_UPDATE_OUTCOME_UNSPECIFIED]
        if engines and engines <= state.finished and refused:
            state.plan.phase = ce.VERSION_PHASE_FAILED
            first = refused[0]
            state.error = common_pb2.ErrorDetail(
                code=common_pb2.WeightUpdateOutcome.Name(first.last_outcome),
                message=f"replica {first.request.instance_name} refused version {state.number}: "
                        f"{first.last_error.message if first.last_error else 'no detail'}; it keeps version "
                        f"{first.weight_version}")

    def _check_sources(self, plan: ce.GetVersionPlanResponse) -> None:
        now = self._clock()
        for planned in plan.buckets:
            source = self._workers.get(planned.source_worker_id)
            if source is None or not source.live(now) or source.kind != ce.WORKER_KIND_TRAINER_RANK:
                raise FailedPrecondition(f"bucket {planned.bucket.index}: source worker {planned.source_worker_id!r} "
                                         "is not a registered trainer rank", field="buckets.source_worker_id")

    def _live(self, kind: int) -> list[Worker]:
        now = self._clock()
        return [w for w in self._workers.values() if w.kind == kind and w.live(now)]

    def _live_worker(self, worker_id: str) -> Worker:
        worker = self._workers.get(worker_id)
        if worker is None or not worker.live(self._clock()):
            self._workers.pop(worker_id, None)
            raise NotFound(f"worker {worker_id!r} is not registered (lease expired or coordinator restarted); "
                           "register again", field="worker_id")
        return worker

    def _state(self, version: int) -> VersionState:
        if self._latest is None:
            raise NotFound("no version has been published yet", field="version")
        if version and version != self._latest.number:
            raise NotFound(f"version {version} is not the latest ({self._latest.number}); only the latest plan is kept",
                           field="version")
        return self._latest

    def _lease(self, worker: Worker) -> ce.Lease:
        return ce.Lease(ttl_ms=int(self._ttl_s * 1000), expire_time=_timestamp(worker.expires_at))

    def _latest_version(self) -> common_pb2.WeightVersion:
        return common_pb2.WeightVersion() if self._latest is None else self._latest.plan.version

    def _replica_proto(self, worker: Worker, now: float) -> ce.ReplicaVersion:
        return ce.ReplicaVersion(
            worker_id=worker.worker_id, instance_name=worker.request.instance_name, address=worker.request.address,
            weight_version=worker.weight_version, last_outcome=worker.last_outcome, last_error=worker.last_error,
            last_update_time=_timestamp(worker.last_update_time) if worker.last_update_time else None,
            live=worker.live(now))

    def _status(self) -> ce.GetVersionResponse:
        now = self._clock()
        replicas = [w for w in self._workers.values() if w.kind == REPLICA]
        live = [w.weight_version for w in replicas if w.live(now)]
        return ce.GetVersionResponse(
            latest_version=self._latest_version(),
            latest_phase=self._latest.plan.phase if self._latest else ce.VERSION_PHASE_UNSPECIFIED,
            fleet_version=min(live) if live else 0,
            replicas=[self._replica_proto(w, now) for w in replicas], generation=self._generation)

    def _persist_if_ended(self, state: VersionState, phase_before: int) -> None:
        """Store the plan when its version just ended. Nothing else about it changes after
        publish, and a restart resumes GATHERING and DISTRIBUTING alike (``_load_latest``),
        so the in-between transitions need no write (each one is an fsync)."""
        if state.plan.phase != phase_before and state.plan.phase in (ce.VERSION_PHASE_COMPLETE, ce.VERSION_PHASE_FAILED):
            self._persist()

    def _persist(self) -> None:
        assert self._latest is not None
        self._store.put(PLAN_KEY, self._latest.plan.SerializeToString())

    def _load_latest(self) -> VersionState | None:
        stored = self._store.get(PLAN_KEY)
        if stored is None:
            return None
        plan = ce.GetVersionPlanResponse.FromString(stored.value)
        if plan.phase in (ce.VERSION_PHASE_GATHERING, ce.VERSION_PHASE_DISTRIBUTING):
            # Workers of the interrupted distribution re-register; they take it up again.
            plan.phase = ce.VERSION_PHASE_DISTRIBUTING
        return VersionState(plan)


def _kind_prefix(kind: int) -> str:
    return {ce.WORKER_KIND_TRAINER_RANK: "trainer", ENGINE: "engine", REPLICA: "replica"}[kind]
