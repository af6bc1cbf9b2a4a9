"""Runs one confined process tree under limits and says what it did.

The host side enforces what rlimits cannot: the wall-clock limit, the output limit (pipes
are read here and the tree is killed at the cap) and the final kill of the whole sandbox
(SIGKILL to bwrap's process group; ``--die-with-parent`` and the pid namespace take every
descendant with it).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from k2rl.sandbox.cgroups import CgroupTree, CgroupUsage, RunCgroup
from k2rl.sandbox.isolation import Isolation, PreparedCommand
from k2rl.sandbox.launcher import parse_report
from k2rl.sandbox.model import Limits, RunResult, Status

_READ_CHUNK = 65536
# Messages by which runtimes report a failed allocation under RLIMIT_AS.
_MEMORY_MARKERS = (b"MemoryError", b"std::bad_alloc", b"Cannot allocate memory", b"cannot allocate memory",
                   b"out of memory")
_BWRAP_SETUP_FAILURE = b"bwrap: "
# Exit codes of the launcher itself (setrlimit, fork, exec of the launcher, wait4 failed) and
# of the cgroup helper (125).
_LAUNCHER_FAILURES = frozenset({121, 122, 123, 124, 125, 126})


class KillSwitch:
    """Kills every process tree registered with it, now and (once tripped) on registration."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._killers: dict[int, Callable[[], None]] = {}
        self._tripped = False

    def register(self, key: int, kill: Callable[[], None]) -> None:
        with self._lock:
            self._killers[key] = kill
            tripped = self._tripped
        if tripped:
            kill()

    def unregister(self, key: int) -> None:
        with self._lock:
            self._killers.pop(key, None)

    def trip(self) -> None:
        with self._lock:
            self._tripped = True
            killers = list(self._killers.values())
        for kill in killers:
            kill()


@dataclass
class _Streams:
    stdout: bytearray
    stderr: bytearray
    stdout_truncated: bool = False
    stderr_truncated: bool = False


def classify(*, exit_code: int, signal_number: int, wall_killed: bool, output_killed: bool,
             cpu_time_ms: float, limits: Limits, stderr: bytes, peak_memory_bytes: int,
             oom_killed: bool = False) -> Status:
    """Status of a finished run; limits first, since a limit kill also looks like a crash."""
    if output_killed:
        return Status.OUTPUT_LIMIT
    if wall_killed or signal_number == signal.SIGXCPU:
        return Status.TIMEOUT
    if oom_killed:
        return Status.MEMORY_LIMIT  # the cgroup's memory.max, enforced by the kernel's OOM killer
    if signal_number == signal.SIGKILL and cpu_time_ms >= limits.cpu_time_ms:
        return Status.TIMEOUT  # the hard CPU limit's SIGKILL after an ignored SIGXCPU
    if exit_code == 0 and signal_number == 0:
        return Status.OK
    tail = stderr[-4096:]
    if any(marker in tail for marker in _MEMORY_MARKERS) or peak_memory_bytes >= 0.95 * limits.memory_bytes:
        return Status.MEMORY_LIMIT
    return Status.RUNTIME_ERROR


class ProcessRuntime:
    """Runs argv in a host working directory, confined by ``isolation`` (and a cgroup per run
    when ``cgroups`` is given)."""

    def __init__(self, isolation: Isolation, cgroups: CgroupTree | None = None) -> None:
        self.isolation = isolation
        self.cgroups = cgroups

    @property
    def features(self) -> list[str]:
        return ["cgroup_v2"] if self.cgroups is not None else []

    def run(self, argv: Sequence[str], workdir: Path, limits: Limits, *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, kill_switch: KillSwitch | None = None) -> RunResult:
        group = None
        try:
            if self.cgroups is not None:
                group = self.cgroups.create(limits)
            command = self.isolation.prepare(argv, workdir, env or {}, limits)
        except OSError as error:
            if group is not None:
                group.close()
            return RunResult(Status.SANDBOX_ERROR, error=f"cannot prepare the sandbox: {error}")
        if group is not None:
            assert self.cgroups is not None
            command = replace(command, argv=self.cgroups.enter_argv(group, command.argv))
        try:
            return self._run_prepared(command, limits, stdin, kill_switch, group)
        finally:
            if group is not None:
                group.close()

    def _run_prepared(self, command: PreparedCommand, limits: Limits, stdin: bytes, kill_switch: KillSwitch | None,
                      group: RunCgroup | None) -> RunResult:
        started = time.monotonic()
        try:
            process = self._spawn(command)
        except OSError as error:
            command.close_report()
            return RunResult(Status.SANDBOX_ERROR, error=f"cannot start the sandbox: {error}")
        finally:
            command.close_fds()
        kill = _group_killer(process.pid)
        if kill_switch is not None:
            kill_switch.register(process.pid, kill)
        try:
            return self._supervise(process, kill, started, limits, stdin, command.report_fd, group)
        finally:
            command.close_report()
            if kill_switch is not None:
                kill_switch.unregister(process.pid)

    def _spawn(self, command: PreparedCommand) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=command.env, cwd=command.cwd, pass_fds=command.pass_fds, start_new_session=True,
        )

    def _supervise(self, process: subprocess.Popen[bytes], kill: Callable[[], None], started: float,
                   limits: Limits, stdin: bytes, report_fd: int, group: RunCgroup | None) -> RunResult:
        deadline = started + limits.wall_time_ms / 1000
        streams = _Streams(bytearray(), bytearray())
        wall_killed = output_killed = False
        assert process.stdin and process.stdout and process.stderr
        pidfd = os.pidfd_open(process.pid)
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ, "stdout")
            selector.register(process.stderr, selectors.EVENT_READ, "stderr")
            selector.register(pidfd, selectors.EVENT_READ, "exit")
            pending_stdin = memoryview(stdin)
            if pending_stdin:
                os.set_blocking(process.stdin.fileno(), False)
                selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")
            else:
                process.stdin.close()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    wall_killed = True
                    kill()
                    break
                exited = False
                for key, _ in selector.select(timeout=remaining):
                    if key.data == "exit":
                        exited = True
                    elif key.data == "stdin":
                        pending_stdin = _feed(process, selector, pending_stdin)
                    elif _drain(key, selector, streams, limits.max_output_bytes):
                        output_killed = True
                if output_killed:
                    kill()
                    break
                if exited:
                    # Whatever is still buffered in the pipes is the rest of the output.
                    output_killed = _drain_available(selector, streams, limits.max_output_bytes)
                    break
        os.close(pidfd)
        kill()  # nothing may outlive its run, even a daemonised descendant
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()
        wall_ms = (time.monotonic() - started) * 1000
        report = parse_report(_read_all(report_fd))
        group_usage = group.usage() if group is not None else CgroupUsage(0, False)
        stdout, stderr = bytes(streams.stdout), bytes(streams.stderr)
        truncated = {"stdout_truncated": streams.stdout_truncated, "stderr_truncated": streams.stderr_truncated}
        if report is None and not (wall_killed or output_killed):
            # The launcher never reported: the sandbox failed to start, or the program killed
            # its own launcher (it may: same uid) and with it the whole sandbox.
            code = os.waitstatus_to_exitcode(status)
            if code == 1 and stderr.startswith(_BWRAP_SETUP_FAILURE) or code in _LAUNCHER_FAILURES:
                return RunResult(Status.SANDBOX_ERROR, exit_code=code, stderr=stderr, wall_time_ms=wall_ms,
                                 error=stderr.decode(errors="replace").strip() or f"sandbox exited with {code}")
            if group_usage.oom_killed:  # the OOM killer may pick the launcher
                return RunResult(Status.MEMORY_LIMIT, 0, signal.SIGKILL, stdout, stderr, wall_time_ms=wall_ms,
                                 peak_memory_bytes=group_usage.peak_memory_bytes, **truncated)
            return RunResult(Status.RUNTIME_ERROR, 0, signal.SIGKILL, stdout, stderr, wall_time_ms=wall_ms,
                             error="the program killed its launcher", **truncated)
        exit_code, signal_number = (report.exit_code, report.signal) if report else (0, signal.SIGKILL)
        cpu_ms = report.cpu_time_ms if report else (usage.ru_utime + usage.ru_stime) * 1000
        # The cgroup's peak covers the whole group; the launcher's is the largest single process.
        peak = group_usage.peak_memory_bytes or (report.peak_memory_bytes if report else 0)
        status_ = classify(exit_code=exit_code, signal_number=signal_number, wall_killed=wall_killed,
                           output_killed=output_killed, cpu_time_ms=cpu_ms, limits=limits, stderr=stderr,
                           peak_memory_bytes=peak, oom_killed=group_usage.oom_killed)
        return RunResult(status_, exit_code, signal_number, stdout, stderr, wall_time_ms=wall_ms, cpu_time_ms=cpu_ms,
                         peak_memory_bytes=peak, **truncated)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    for _ in range(16):  # the report is one short line
        try:
            chunk = os.read(fd, 4096)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


def _group_killer(pid: int) -> Callable[[], None]:
    def kill() -> None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return kill


def _pipes_open(selector: selectors.BaseSelector) -> bool:
    return any(key.data in ("stdout", "stderr") for key in selector.get_map().values())


def _feed(process: subprocess.Popen[bytes], selector: selectors.BaseSelector, pending: memoryview) -> memoryview:
    assert process.stdin
    try:
        written = os.write(process.stdin.fileno(), pending[:_READ_CHUNK])
    except (BrokenPipeError, OSError):
        written = len(pending)
    pending = pending[written:]
    if not pending:
        selector.unregister(process.stdin)
        process.stdin.close()
    return pending


def _drain(key: selectors.SelectorKey, selector: selectors.BaseSelector, streams: _Streams, cap: int) -> bool:
    """Read one chunk of stdout/stderr; True when the output limit was exceeded."""
    chunk = os.read(key.fd, _READ_CHUNK)
    if not chunk:
        selector.unregister(key.fileobj)
        return False
    buffer = streams.stdout if key.data == "stdout" else streams.stderr
    room = cap - len(buffer)
    buffer += chunk[:max(room, 0)]
    if len(chunk) > room:
        setattr(streams, f"{key.data}_truncated", True)
        return True
    return False


def _drain_available(selector: selectors.BaseSelector, streams: _Streams, cap: int) -> bool:
    """After exit: read to EOF, never blocking on a pipe a leftover descendant holds open.

    Bounded: at most ``cap`` bytes per stream are kept, and a pipe quiet for 50 ms is left.
    True when the output limit was exceeded.
    """
    for _ in range(2 * (cap // _READ_CHUNK + 2)):
        if not _pipes_open(selector):
            return False
        ready = [key for key, _ in selector.select(timeout=0.05) if key.data in ("stdout", "stderr")]
        if not ready:
            return False
        for key in ready:
            if _drain(key, selector, streams, cap):
                return True
    return False
