"""The local deployment ``k2rl run`` brings up: the six services (``LocalCluster``), the
checkpoint engine's worker processes when nobody else runs them, and the wait until every
inference replica has joined the checkpoint engine.

The checkpoint_engine service is only the coordinator; the bytes move in engine worker
processes (``python -m k2rl.checkpoint_engine.worker``, one per device, co-located with the
trainer). In a cluster deployment they run beside the trainer; on one machine ``k2rl run``
starts ``engine_workers`` of them (experiment YAML; 0 = the deployment runs its own) and
stops them with the services.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce_pb2
from k2rl.core.net import free_loopback_port


class EngineWorkers:
    """Engine worker processes owned by this ``k2rl run``."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen[str]] = []

    def start(self, coordinator: str, count: int, config_file: Path | None, log_dir: Path,
              timeout_s: float = 120.0) -> None:
        port = free_loopback_port()
        for rank in range(count):
            command = [sys.executable, "-m", "k2rl.checkpoint_engine.worker", "--coordinator", coordinator,
                       "--rank", str(rank), "--world-size", str(count), "--master-port", str(port)]
            if config_file is not None:
                command += ["--config", str(config_file)]
            with (log_dir / f"engine_worker_{rank}.log").open("w") as log:
                self.processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True,
                                                       start_new_session=True))
        deadline = time.monotonic() + timeout_s
        for rank, process in enumerate(self.processes):  # each prints "ready <worker id>" once registered
            line = _readline(process, deadline)
            if not line.startswith("ready"):
                raise RuntimeError(f"checkpoint engine worker {rank} did not start (exit {process.poll()}); "
                                   f"see {log_dir / f'engine_worker_{rank}.log'}")

    def stop(self, timeout_s: float = 20.0) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        self.processes.clear()


def _readline(process: subprocess.Popen[str], deadline: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        assert process.stdout is not None
        selector.register(process.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if selector.select(timeout=0.5):
                return process.stdout.readline()
            if process.poll() is not None:
                return ""
    return ""


def live_workers(checkpoint_engine: object, kind: int) -> int:
    """Live registrations of ``kind`` that the coordinator reports (replicas via GetVersion)."""
    status = checkpoint_engine.GetVersion(ce_pb2.GetVersionRequest(), timeout=10)  # type: ignore[attr-defined]
    if kind == ce_pb2.WORKER_KIND_INFERENCE_REPLICA:
        return sum(r.live for r in status.replicas)
    raise ValueError("the coordinator's GetVersion lists replicas only")


def wait_for_replicas(checkpoint_engine: object, expected: int, timeout_s: float) -> None:
    """Until ``expected`` inference replicas are registered with the checkpoint engine."""
    deadline = time.monotonic() + timeout_s
    while (live := live_workers(checkpoint_engine, ce_pb2.WORKER_KIND_INFERENCE_REPLICA)) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{live} of {expected} inference replicas registered with the checkpoint engine after "
                               f"{timeout_s:.0f}s; is `checkpoint_engine_replica: true` set for inference?")
        time.sleep(0.2)
