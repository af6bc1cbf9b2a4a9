"""Settings of the checkpoint engine coordinator and its workers (defaults that run on CPU)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from k2rl.core.config import MiB, ServiceSettings
from k2rl.weights import DEFAULT_ALIGNMENT

Pipeline = Literal["two_stage", "three_stage"]
DataPath = Literal["auto", "shared_slots", "broadcast"]


class CheckpointEngineSettings(ServiceSettings):
    bucket_bytes: int = Field(64 * MiB, gt=0, multiple_of=DEFAULT_ALIGNMENT,
                              description="IPC buffer (bucket) size; published buckets must not exceed it")
    lease_ttl_ms: int = Field(10_000, ge=100, description="worker lease; heartbeat at least 3 times per TTL")
    state_namespace: str = Field("checkpoint_engine", description="state-store namespace for versions")
    max_tensors_per_version: int = Field(1_000_000, gt=0, description="plans with more tensors are refused")


class WorkerSettings(ServiceSettings):
    """An engine worker process (``python -m k2rl.checkpoint_engine.worker``); ``service`` is
    checkpoint_engine, whose address (dependencies) is the coordinator."""

    rank: int = Field(0, ge=0)
    world_size: int = Field(1, gt=0)
    master_addr: str = "127.0.0.1"
    master_port: int = Field(29600, gt=0, le=65535, description="TCPStore of the engine workers' gloo group")
    instance_name: str = ""
    bucket_bytes: int = Field(64 * MiB, gt=0, multiple_of=DEFAULT_ALIGNMENT)
    pipeline: Pipeline = "two_stage"
    data_path: DataPath = Field("auto", description=(
        "how bucket bytes reach the workers' replicas: shared_slots = every worker on one node, each bucket "
        "written once by its owner into its own IPC slot and read there by every replica (only metadata and "
        "acks go through the process group); broadcast = torch.distributed broadcast into every worker's "
        "slots (multi-node); auto = shared_slots when all workers report the same node"))
    collective_timeout_s: float = Field(30.0, gt=0, description="a collective that takes longer fails the update")
    replica_timeout_s: float = Field(30.0, gt=0, description="longest wait for a replica's acknowledgement")
    poll_interval_s: float = Field(0.5, gt=0, description=(
        "longest wait of rank 0's long poll for work at the coordinator (it answers at once when a version is "
        "published or a replica joins); capped at a quarter of collective_timeout_s"))
    verify_source_checksums: bool = Field(True, description="check each bucket against its checksum on gather")
