"""Starting a trainer job: this process as rank 0, the other ranks as child processes.

``k2rl serve trainer --nproc N`` and ``k2rl train pretrain --nproc N`` spawn ranks 1..N-1
with the torchrun variables set, each running ``python -m k2rl.trainer.worker``; under
``torchrun`` (the variables are already set) nothing is spawned and every process joins
as the rank it was given. Children die with their parent (PR_SET_PDEATHSIG), so a kill -9
of rank 0 does not leave ranks waiting in a collective.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from k2rl.core.net import free_loopback_port
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.distributed import init_from_env, shutdown
from k2rl.trainer.job import TrainerJob, build_job

JOB_SPEC_ENV = "K2RL_TRAINER_JOB"


class JobSpec(BaseModel):
    """What every rank needs to build the same engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "k2-nano"
    training: TrainingConfig = TrainingConfig()
    device: str = "auto"
    nproc: int = 1
    resume_from: Path | None = None
    dist_port: int = 0
    dist_timeout_s: float = 600.0


@dataclass
class LocalJob:
    """Rank 0's job handle and the child processes of ranks 1..N-1."""

    job: TrainerJob
    followers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    torch_threads: int = field(default_factory=torch.get_num_threads)

    def close(self, timeout_s: float = 30.0) -> None:
        """Release the followers, wait for them (killing stragglers), leave the process group."""
        if self.job.ctx.is_leader:
            self.job.close()
        for proc in self.followers:
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        shutdown()
        torch.set_num_threads(self.torch_threads)  # init_from_env splits the cores between CPU ranks


def start_job(spec: JobSpec) -> LocalJob:
    """Join (torchrun) or create (spawn ranks 1..nproc-1) the job; return rank 0's handle."""
    threads = torch.get_num_threads()
    followers: list[subprocess.Popen[bytes]] = []
    env: dict[str, str] | None = None  # None: this process's own environment (torchrun, or one rank)
    if spec.nproc > 1 and "WORLD_SIZE" not in os.environ:
        port = spec.dist_port or free_loopback_port()
        rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(spec.nproc)}
        for rank in range(1, spec.nproc):
            child_env = {**os.environ, **rendezvous, "RANK": str(rank), "LOCAL_RANK": str(rank),
                         JOB_SPEC_ENV: spec.model_dump_json()}
            followers.append(subprocess.Popen([sys.executable, "-m", "k2rl.trainer.worker"], env=child_env))
        env = {**rendezvous, "RANK": "0", "LOCAL_RANK": "0"}
    try:
        ctx = init_from_env(spec.device, spec.dist_timeout_s, env)
        job = build_job(spec.model, spec.training, ctx, spec.resume_from)
    except BaseException:
        for proc in followers:
            proc.kill()
        raise
    return LocalJob(job, followers, threads)


def run_follower(spec: JobSpec) -> None:
    """Body of ranks > 0: build the same engine, then execute rank 0's commands until stop."""
    ctx = init_from_env(spec.device, spec.dist_timeout_s)
    try:
        job = build_job(spec.model, spec.training, ctx, spec.resume_from)
        job.follow()
    finally:
        shutdown()
