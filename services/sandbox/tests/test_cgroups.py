"""cgroup v2 per-run limits: detection and fallback, the files written, usage read back (on a
directory tree shaped like cgroupfs), and joining a real cgroup v2 where one is writable."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from k2rl.core.testing import require_binary
from k2rl.sandbox.cgroups import (
    ENTER_SOURCE,
    SERVICE_LEAF,
    CgroupTree,
    RunCgroup,
    own_cgroup,
    prepare_subtree,
)
from k2rl.sandbox.isolation import Isolation, IsolationConfig
from k2rl.sandbox.launcher import build_c_program
from k2rl.sandbox.model import Limits, Status
from k2rl.sandbox.runtime import ProcessRuntime, classify

LIMITS = Limits(wall_time_ms=5_000, cpu_time_ms=5_000, memory_bytes=256 * 1024**2, max_processes=16,
                max_output_bytes=1 << 20, max_file_size_bytes=1 << 20)


def _fake_cgroup(path: Path, controllers: str, procs: str = "", root: bool = False) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "cgroup.controllers").write_text(controllers + "\n")
    (path / "cgroup.subtree_control").write_text("\n")
    (path / "cgroup.procs").write_text(procs)
    if not root:
        (path / "cgroup.type").write_text("domain\n")
    return path


def test_detection_says_why_cgroups_cannot_be_used(tmp_path: Path) -> None:
    assert "not a cgroup v2 directory" in prepare_subtree(tmp_path)
    v1_held = _fake_cgroup(tmp_path / "v1", "cpu hugetlb")
    assert "controllers memory, pids are not available" in prepare_subtree(v1_held)
    shared = _fake_cgroup(tmp_path / "shared", "cpu memory pids", procs="1\n2\n")
    assert "holds other processes" in prepare_subtree(shared)


def test_fallback_to_rlimits_is_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="k2rl.sandbox.cgroups"):
        assert CgroupTree.detect(_fake_cgroup(tmp_path / "cg", "io"), tmp_path, 1.0) is None
    assert "cgroup v2 limits unavailable" in caplog.text and "per-process rlimits only" in caplog.text


def test_a_delegated_subtree_gets_controllers_and_the_service_moves_to_a_leaf(tmp_path: Path) -> None:
    root = _fake_cgroup(tmp_path / "svc", "cpu memory pids io", procs=f"{os.getpid()}\n")
    assert prepare_subtree(root) == ""
    assert (root / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    assert (root / SERVICE_LEAF / "cgroup.procs").read_text() == str(os.getpid())


def test_each_run_gets_its_limits_and_reports_peak_and_oom(tmp_path: Path) -> None:
    root = _fake_cgroup(tmp_path / "svc", "cpu memory pids")
    (root / "cgroup.subtree_control").write_text("memory pids cpu\n")
    tree = CgroupTree(root, Path("/nonexistent/enter"), cpus=0.5)
    group = tree.create(LIMITS)
    assert (group.path / "memory.max").read_text() == str(256 * 1024**2)
    assert (group.path / "pids.max").read_text() == "20"  # program's 16 + bwrap and the launcher
    assert (group.path / "cpu.max").read_text() == "50000 100000"
    assert tree.enter_argv(group, ["bwrap", "x"]) == ["/nonexistent/enter", str(group.path / "cgroup.procs"),
                                                      "bwrap", "x"]
    (group.path / "memory.peak").write_text("123456789\n")
    (group.path / "memory.events").write_text("low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n")
    usage = group.usage()
    assert (usage.peak_memory_bytes, usage.oom_killed) == (123456789, True)
    assert classify(exit_code=0, signal_number=9, wall_killed=False, output_killed=False, cpu_time_ms=5.0,
                    limits=LIMITS, stderr=b"", peak_memory_bytes=usage.peak_memory_bytes,
                    oom_killed=True) is Status.MEMORY_LIMIT
    (group.path / "memory.events").write_text("oom 0\noom_kill 0\n")
    assert not group.usage().oom_killed


def _writable_cgroup2() -> Path:
    own = own_cgroup() if Path("/proc/self/cgroup").exists() else None
    if own is None:
        pytest.skip("no cgroup v2 mount")
    probe = own / f"k2rl-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError as error:
        pytest.skip(f"cgroup v2 at {own} is not writable here: {error}")
    return probe


def test_programs_run_inside_their_own_cgroup_which_is_removed_after() -> None:
    require_binary("bwrap", "bubblewrap")
    root = _writable_cgroup2()
    # Not under pytest's 0700 tmp: the sandbox uid must reach the launcher and its directory.
    work = Path(tempfile.mkdtemp(prefix="k2rl-cgroup-test-"))
    try:
        work.chmod(0o711)
        tree = CgroupTree.detect(root, work, 1.0)
        if tree is None:  # no memory/pids controllers here: exercise joining and cleanup without them
            tree = CgroupTree(root, build_c_program(work, "k2rl-cgroup-enter", ENTER_SOURCE), 1.0)
        runtime = ProcessRuntime(Isolation(IsolationConfig(work_root=work)), tree)
        workdir = work / "run"
        workdir.mkdir()
        if os.geteuid() == 0:
            os.chown(workdir, 65534, 65534)
        members: list[str] = []

        def watch() -> None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not members:
                for group in root.glob("run-*"):
                    members.extend((group / "cgroup.procs").read_text().split())
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        result = runtime.run(["bash", "-c", "sleep 0.5 & sleep 0.5; echo done"], workdir, LIMITS)
        watcher.join()
        assert (result.status, result.stdout) == (Status.OK, b"done\n")
        assert members, "the program never appeared in a run cgroup"
        assert not list(root.glob("run-*"))
    finally:
        for leftover in root.glob("run-*"):
            RunCgroup(leftover).close()
        root.rmdir()
        shutil.rmtree(work, ignore_errors=True)
