"""Everything a run needs to resume, in the state store (DESIGN.md section 2).

Layout under ``run/<run_id>``:

- ``run/<id>``               the Run record (controller.v1.Run, binary protobuf)
- ``run/<id>/cursor``        dataset cursor: next task index per environment, next group number
- ``run/<id>/group/<n>``     the partial-rollout buffer: one prompt group per key (JSON)
- ``run/<id>/train_batch``   the batch of the iteration being trained, written before the
                             first TrainStep so a restarted controller retrains the same
                             groups and skips steps the trainer already applied
- streams ``run/<id>/iterations`` (IterationRecord), ``run/<id>/trajectories`` (the
  finished-trajectory log: every trained Trajectory, once), ``run/<id>/events``
  (WatchRunResponse; sequence = offset + 1)

An iteration is recorded by one atomic commit conditioned on the Run record's version:
the record, the trained trajectories, the deletion of the trained groups and the train
batch all land together or not at all, so a batch is never recorded (or trained) twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from k2rl.common.v1 import common_pb2
from k2rl.controller.trajectories import PromptGroup
from k2rl.controller.v1 import controller_pb2
from k2rl.core.store import Append, Delete, Put, StateStore, encode_json

RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _run_key(run_id: str) -> str:
    return f"run/{run_id}"


@dataclass
class Cursor:
    """Next task index per environment and the next group number."""

    next_task: dict[str, int] = field(default_factory=dict)
    next_group: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"next_task": self.next_task, "next_group": self.next_group}


@dataclass(frozen=True)
class TrainBatch:
    """The groups an iteration trains on, fixed before its first TrainStep."""

    iteration: int
    group_keys: list[str]
    start_step: int
    rollout_weight_version: int
    rollout: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"iteration": self.iteration, "group_keys": self.group_keys, "start_step": self.start_step,
                "rollout_weight_version": self.rollout_weight_version, "rollout": self.rollout}


class RunStore:
    """Typed access to one state store's runs. Thread-safe as the store is."""

    def __init__(self, store: StateStore) -> None:
        self.store = store

    # --- run records ---

    def create_run(self, run: controller_pb2.Run) -> int:
        """Store a new run; VersionConflict if the id exists."""
        return self.store.commit([Put(_run_key(run.run_id), run.SerializeToString(), 0),
                                  Put(f"{_run_key(run.run_id)}/cursor", encode_json(Cursor().to_json()), 0)])[0]

    def get_run(self, run_id: str) -> tuple[controller_pb2.Run, int] | None:
        stored = self.store.get(_run_key(run_id))
        if stored is None:
            return None
        return controller_pb2.Run.FromString(stored.value), stored.version

    def put_run(self, run: controller_pb2.Run, expected_version: int | None) -> int:
        return self.store.commit([Put(_run_key(run.run_id), run.SerializeToString(), expected_version)])[0]

    def list_runs(self) -> list[controller_pb2.Run]:
        runs = [controller_pb2.Run.FromString(v.value) for key, v in self.store.scan("run/")
                if key.count("/") == 1]
        return sorted(runs, key=lambda r: (r.create_time.ToNanoseconds(), r.run_id), reverse=True)

    # --- dataset cursor and partial-rollout buffer ---

    def cursor(self, run_id: str) -> tuple[Cursor, int]:
        stored = self.store.get(f"{_run_key(run_id)}/cursor")
        if stored is None:
            return Cursor(), 0
        data = stored.json()
        return Cursor(dict(data["next_task"]), int(data["next_group"])), stored.version

    def add_groups(self, run_id: str, groups: list[PromptGroup], cursor: Cursor, cursor_version: int) -> None:
        """Put new groups in the buffer and advance the cursor past them, atomically."""
        ops: list[Any] = [Put(f"{_run_key(run_id)}/cursor", encode_json(cursor.to_json()), cursor_version)]
        ops += [Put(self.group_key(run_id, g.group_id), encode_json(g.to_json())) for g in groups]
        self.store.commit(ops)

    def group_key(self, run_id: str, group_id: str) -> str:
        return f"{_run_key(run_id)}/group/{group_id}"

    def save_group(self, run_id: str, group: PromptGroup) -> None:
        self.store.put(self.group_key(run_id, group.group_id), encode_json(group.to_json()))

    def buffered_groups(self, run_id: str) -> list[PromptGroup]:
        """The partial-rollout buffer, oldest group first (group ids sort by creation)."""
        return [PromptGroup.from_json(v.json()) for _, v in self.store.scan(f"{_run_key(run_id)}/group/")]

    # --- train batch and iteration commit ---

    def train_batch(self, run_id: str) -> TrainBatch | None:
        stored = self.store.get(f"{_run_key(run_id)}/train_batch")
        if stored is None:
            return None
        data = stored.json()
        return TrainBatch(int(data["iteration"]), list(data["group_keys"]), int(data["start_step"]),
                          int(data["rollout_weight_version"]), dict(data["rollout"]))

    def put_train_batch(self, run_id: str, batch: TrainBatch) -> None:
        self.store.put(f"{_run_key(run_id)}/train_batch", encode_json(batch.to_json()))

    def commit_iteration(self, run: controller_pb2.Run, run_version: int, record: controller_pb2.IterationRecord,
                         trained: list[PromptGroup], event: controller_pb2.WatchRunResponse) -> int:
        """Record a completed iteration atomically; VersionConflict if the run record moved."""
        key = _run_key(run.run_id)
        ops: list[Any] = [Put(key, run.SerializeToString(), run_version),
                          Delete(f"{key}/train_batch"),
                          Append(f"{key}/iterations", record.SerializeToString())]
        for group in trained:
            ops.append(Delete(self.group_key(run.run_id, group.group_id)))
            ops += [Append(f"{key}/trajectories", t.SerializeToString()) for t in group.to_trajectories()]
        ops.append(Append(f"{key}/events", event.SerializeToString()))
        return self.store.commit(ops)[0]

    def iterations(self, run_id: str, start: int = 0, limit: int | None = None) -> list[controller_pb2.IterationRecord]:
        return [controller_pb2.IterationRecord.FromString(b)
                for b in self.store.read(f"{_run_key(run_id)}/iterations", start, limit)]

    def iteration_count(self, run_id: str) -> int:
        return self.store.length(f"{_run_key(run_id)}/iterations")

    def finished_trajectories(self, run_id: str) -> Iterator[common_pb2.Trajectory]:
        stream = f"{_run_key(run_id)}/trajectories"
        start, page = 0, 256
        while batch := self.store.read(stream, start, page):
            yield from (common_pb2.Trajectory.FromString(b) for b in batch)
            start += len(batch)

    # --- events ---

    def append_event(self, run_id: str, event: controller_pb2.WatchRunResponse) -> int:
        """Append an event; returns its sequence number (offset + 1). ``event.sequence`` is
        filled in on read, since it is only known once appended."""
        return self.store.append(f"{_run_key(run_id)}/events", event.SerializeToString()) + 1

    def events(self, run_id: str, after_sequence: int, limit: int = 256) -> list[controller_pb2.WatchRunResponse]:
        out = []
        for offset, data in enumerate(self.store.read(f"{_run_key(run_id)}/events", after_sequence, limit)):
            event = controller_pb2.WatchRunResponse.FromString(data)
            event.sequence = after_sequence + offset + 1
            out.append(event)
        return out

    def event_count(self, run_id: str) -> int:
        return self.store.length(f"{_run_key(run_id)}/events")


def check_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError("run_id must be 1-64 letters, digits, '-' or '_'")
    return run_id


__all__ = ["Cursor", "RunStore", "TrainBatch", "check_run_id"]
