"""Settings of the sandbox service (env prefix ``K2RL_``, e.g. ``K2RL_CONCURRENCY=8``)."""

from __future__ import annotations

import os
import socket
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from k2rl.core.config import MiB, ServiceSettings
from k2rl.sandbox.model import Limits

GiB = 1024 * MiB


class SandboxSettings(ServiceSettings):
    # Each queued Execute holds a gRPC handler thread, so there must be more of them than
    # concurrency + max_queue, or excess calls would wait in gRPC instead of being refused.
    max_workers: int = Field(256, gt=0, description="gRPC handler threads")

    concurrency: int = Field(default_factory=lambda: os.cpu_count() or 2, gt=0,
                             description="programs running at once")
    max_queue: int = Field(128, ge=0, description="executions waiting beyond concurrency before RESOURCE_EXHAUSTED")

    default_wall_time_ms: int = Field(10_000, gt=0)
    default_cpu_time_ms: int = Field(10_000, gt=0)
    default_memory_bytes: int = Field(512 * MiB, gt=0)
    default_max_processes: int = Field(64, gt=0)
    default_max_output_bytes: int = Field(1 * MiB, gt=0)
    default_max_file_size_bytes: int = Field(64 * MiB, gt=0)
    max_wall_time_ms: int = Field(600_000, gt=0)
    max_cpu_time_ms: int = Field(600_000, gt=0)
    max_memory_bytes: int = Field(8 * GiB, gt=0)
    max_processes: int = Field(1024, gt=0)
    max_output_bytes: int = Field(16 * MiB, gt=0)
    max_file_size_bytes: int = Field(1 * GiB, gt=0)

    unsafe_dev_mode: bool = Field(False, description="run programs WITHOUT bubblewrap (development only)")
    bwrap_path: str = "bwrap"
    launcher_compiler: str = Field("cc", description="C compiler that builds the in-sandbox launcher at start")
    ro_binds: list[str] = Field(default_factory=lambda: ["/usr", "/etc/alternatives", "/etc/ld.so.cache"],
                                description="host paths bound read-only into every sandbox")
    tmp_size_bytes: int = Field(64 * MiB, gt=0, description="size of each sandbox's private /tmp")
    setpriv_path: str = Field("setpriv", description="drops root to sandbox_uid before bwrap (util-linux)")
    sandbox_uid: int = Field(65534, ge=1, description="uid bwrap runs as when the service is root")
    sandbox_gid: int = Field(65534, ge=1)
    seccomp: bool = True
    cgroups: bool = Field(True, description="per-run cgroup v2 limits when a writable subtree is there")
    cgroup_root: Path | None = Field(None, description="delegated cgroup v2 directory; unset = the service's own")
    cgroup_cpus: float = Field(1.0, gt=0, description="cpu.max of each run, in CPUs")
    python_command: str = "python3"
    bash_command: str = "bash"
    cxx_command: str = "g++"
    work_root: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "k2rl-sandbox",
                            description="host directory holding working directories")

    max_sessions: int = Field(256, gt=0)
    session_idle_timeout_s: float = Field(600.0, gt=0)
    max_session_idle_timeout_s: float = Field(86_400.0, gt=0)
    max_read_bytes: int = Field(16 * MiB, gt=0, description="most bytes one ReadFile returns")

    # Kubernetes runtime (pods.py): sessions that name an image, or all sessions when
    # session_runtime is "kubernetes". Off while k8s_namespace is empty.
    session_runtime: Literal["process", "kubernetes"] = Field(
        "process", description="runtime of sessions that name no image")
    k8s_namespace: str = Field("", description="namespace of sandbox pods; empty = Kubernetes runtime off")
    k8s_api_url: str = Field("", description="API server URL; empty = in-cluster config, else ~/.kube/config")
    k8s_verify_ssl: bool = True
    k8s_default_image: str = Field("", description="image of sessions that name none")
    k8s_instance_id: str = Field(default_factory=socket.gethostname,
                                 description="owner label of this replica's pods; stable across restarts")
    k8s_keepalive_command: list[str] = Field(default_factory=lambda: ["sleep", "infinity"],
                                             description="pid 1 of each sandbox pod")
    k8s_cpu_request: str = "250m"
    k8s_cpu_limit: str = "1"
    k8s_ephemeral_storage_limit: str = "2Gi"
    k8s_workdir_size_limit: str = "1Gi"
    k8s_run_as_user: int = Field(65534, ge=1)
    k8s_run_as_group: int = Field(65534, ge=1)
    k8s_runtime_class: str = Field("", description="e.g. gvisor or kata for a stronger boundary")
    k8s_pod_start_timeout_s: float = Field(300.0, gt=0)
    k8s_pod_max_lifetime_s: int = Field(86_400, gt=0, description="activeDeadlineSeconds of every pod")

    http_port: int = Field(0, ge=0, le=65535,
                           description="SandboxFusion-compatible HTTP API (POST /run_code); 0 = off")
    http_host: str = "127.0.0.1"

    @model_validator(mode="after")
    def _defaults_within_ceilings(self) -> SandboxSettings:
        for name in Limits.names():
            if getattr(self.default_limits, name) > getattr(self.limit_ceilings, name):
                raise ValueError(f"default {name} is above its ceiling")
        if self.session_runtime == "kubernetes" and not (self.k8s_namespace and self.k8s_default_image):
            raise ValueError("session_runtime=kubernetes needs k8s_namespace and k8s_default_image")
        return self

    @property
    def default_limits(self) -> Limits:
        return Limits(self.default_wall_time_ms, self.default_cpu_time_ms, self.default_memory_bytes,
                      self.default_max_processes, self.default_max_output_bytes, self.default_max_file_size_bytes)

    @property
    def limit_ceilings(self) -> Limits:
        return Limits(self.max_wall_time_ms, self.max_cpu_time_ms, self.max_memory_bytes, self.max_processes,
                      self.max_output_bytes, self.max_file_size_bytes)
