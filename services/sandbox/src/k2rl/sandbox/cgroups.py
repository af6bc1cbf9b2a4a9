"""cgroup v2 limits per execution, where the service has a writable (delegated) subtree.

Each run gets its own child cgroup with ``memory.max`` (and ``memory.swap.max=0``),
``pids.max`` and ``cpu.max``, so the limits hold for the whole process group, not per process
as rlimits do, and ``memory.peak`` gives the group's real peak. The program enters its cgroup
before bubblewrap starts: a small C helper writes "0" (itself) to the run's ``cgroup.procs``
and execs the rest of the command, so nothing the program forks can start outside it. After
the run, ``cgroup.kill`` takes whatever is left and the directory is removed.

``CgroupTree.detect`` says cleanly why cgroups cannot be used (no cgroup v2, controllers held
by cgroup v1, read-only, other processes in the subtree); the service then keeps rlimits only
and logs the reason once.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from k2rl.sandbox.launcher import build_c_program
from k2rl.sandbox.model import Limits

log = logging.getLogger(__name__)

REQUIRED_CONTROLLERS = ("memory", "pids")
OPTIONAL_CONTROLLERS = ("cpu",)
CPU_PERIOD_US = 100_000
# bwrap (two processes) and the launcher run in the cgroup besides the program.
SANDBOX_OVERHEAD_PROCESSES = 4
SERVICE_LEAF = "k2rl-service"
ENTER_FAILURE = 125

ENTER_SOURCE = r"""
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* usage: k2rl-cgroup-enter CGROUP_PROCS_FILE ARGV... : join the cgroup, then exec ARGV */
int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "k2rl-cgroup: bad arguments\n"); return 125; }
    int fd = open(argv[1], O_WRONLY | O_CLOEXEC);
    if (fd < 0 || write(fd, "0", 1) != 1) {
        fprintf(stderr, "k2rl-cgroup: cannot join %s: %s\n", argv[1], strerror(errno));
        return 125;
    }
    close(fd);
    execvp(argv[2], &argv[2]);
    fprintf(stderr, "k2rl-cgroup: cannot execute %s: %s\n", argv[2], strerror(errno));
    return 125;
}
"""


@dataclass(frozen=True)
class CgroupUsage:
    peak_memory_bytes: int  # 0 when the kernel has no memory.peak (before Linux 5.19)
    oom_killed: bool


def own_cgroup(proc_cgroup: Path = Path("/proc/self/cgroup"),
               mountinfo: Path = Path("/proc/self/mountinfo")) -> Path | None:
    """The service's own cgroup v2 directory, or None without a cgroup2 mount."""
    relative = next((line[3:].strip() for line in proc_cgroup.read_text().splitlines() if line.startswith("0::")),
                    None)
    mount = next((line.split()[4] for line in mountinfo.read_text().splitlines()
                  if " - cgroup2 " in line), None)
    if relative is None or mount is None:
        return None
    return Path(mount) / relative.lstrip("/")


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _write(path: Path, value: str) -> None:
    with open(path, "w") as file:
        file.write(value)


class CgroupTree:
    """A writable cgroup v2 subtree in which each run gets a limited child cgroup."""

    def __init__(self, root: Path, enter_binary: Path, cpus: float) -> None:
        self.root = root
        self.enter_binary = enter_binary
        self.cpus = cpus
        self.controllers = set(_read(root / "cgroup.subtree_control").split())

    @classmethod
    def detect(cls, root: Path | None, work_root: Path, cpus: float, compiler: str = "cc") -> CgroupTree | None:
        """The tree at ``root`` (None: the service's own cgroup) or None, with the reason logged."""
        root = root or own_cgroup()
        problem = "no cgroup v2 mount" if root is None else prepare_subtree(root)
        if not problem:
            assert root is not None
            try:
                tree = cls(root, build_c_program(work_root, "k2rl-cgroup-enter", ENTER_SOURCE, compiler), cpus)
                tree.remove_stale()
                tree.create(Limits(1000, 1000, 64 << 20, 8, 1 << 20, 1 << 20)).close()  # probe
                log.info("cgroup v2 limits per execution under %s (controllers: %s)", root,
                         " ".join(sorted(tree.controllers)))
                return tree
            except OSError as error:
                problem = f"{root}: {error}"
        log.warning("cgroup v2 limits unavailable (%s); limits are per-process rlimits only", problem)
        return None

    def create(self, limits: Limits) -> RunCgroup:
        path = self.root / f"run-{uuid.uuid4().hex[:12]}"
        path.mkdir()
        try:
            if "memory" in self.controllers:
                _write(path / "memory.max", str(limits.memory_bytes))
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", "0")
            if "pids" in self.controllers:
                _write(path / "pids.max", str(limits.max_processes + SANDBOX_OVERHEAD_PROCESSES))
            if "cpu" in self.controllers:
                _write(path / "cpu.max", f"{max(1000, int(self.cpus * CPU_PERIOD_US))} {CPU_PERIOD_US}")
        except OSError:
            RunCgroup(path).close()
            raise
        return RunCgroup(path)

    def enter_argv(self, group: RunCgroup, argv: list[str]) -> list[str]:
        """``argv`` started inside ``group``."""
        return [str(self.enter_binary), str(group.path / "cgroup.procs"), *argv]

    def remove_stale(self) -> None:
        """Remove run cgroups a crashed predecessor left behind."""
        for stale in self.root.glob("run-*"):
            if stale.is_dir():
                RunCgroup(stale).close()


def prepare_subtree(root: Path) -> str:
    """Make ``root`` hand memory/pids(/cpu) to children; returns why it cannot, or ''."""
    available = set(_read(root / "cgroup.controllers").split())
    if not (root / "cgroup.controllers").exists():
        return f"{root} is not a cgroup v2 directory"
    missing = [c for c in REQUIRED_CONTROLLERS if c not in available]
    if missing:
        return f"controllers {', '.join(missing)} are not available in {root} (held by cgroup v1, or not delegated)"
    if not (os.access(root, os.W_OK) and os.access(root / "cgroup.subtree_control", os.W_OK)):
        return f"{root} is not writable (no delegated subtree)"
    wanted = [c for c in (*REQUIRED_CONTROLLERS, *OPTIONAL_CONTROLLERS) if c in available]
    if all(c in _read(root / "cgroup.subtree_control").split() for c in wanted):
        return ""
    is_root_cgroup = not (root / "cgroup.type").exists()
    members = set(_read(root / "cgroup.procs").split())
    if members and not is_root_cgroup:
        # cgroup v2 forbids processes in a cgroup that hands controllers to children.
        if members - {str(os.getpid())}:
            return f"{root} holds other processes ({len(members)}); delegate an empty subtree"
        leaf = root / SERVICE_LEAF
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
    try:
        _write(root / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    except OSError as error:
        return f"cannot enable {' '.join(wanted)} in {root / 'cgroup.subtree_control'}: {error.strerror}"
    return ""


class RunCgroup:
    """The cgroup of one run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def usage(self) -> CgroupUsage:
        peak = _read(self.path / "memory.peak").strip()
        events = dict(line.split() for line in _read(self.path / "memory.events").splitlines() if " " in line)
        return CgroupUsage(int(peak) if peak.isdigit() else 0, int(events.get("oom_kill", "0")) > 0)

    def kill(self) -> None:
        """SIGKILL everything in the cgroup (cgroup.kill, else each listed process)."""
        if (self.path / "cgroup.kill").exists():
            try:
                _write(self.path / "cgroup.kill", "1")
                return
            except OSError:
                pass
        for pid in _read(self.path / "cgroup.procs").split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, PermissionError, ValueError):
                pass

    def close(self, wait_s: float = 2.0) -> None:
        """Kill what is left and remove the cgroup (retried while the processes exit)."""
        self.kill()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as error:
                if error.errno != errno.EBUSY or time.monotonic() >= deadline:
                    log.warning("cannot remove cgroup %s: %s", self.path, error.strerror)
                    return
            time.sleep(0.01)
