"""Hostile programs are contained, with the right status, while normal requests keep being served."""

from __future__ import annotations

import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from k2rl.sandbox.v1 import sandbox_pb2 as pb

S = pb.ExecutionStatus
PY, BASH = pb.LANGUAGE_PYTHON, pb.LANGUAGE_BASH
SHORT = pb.ResourceLimits(wall_time_ms=3000, cpu_time_ms=2000)


@pytest.fixture(scope="module")
def loopback_listener() -> tuple[int, threading.Event]:
    """A TCP service on the host's loopback (stands in for Redis or a gRPC port)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    accepted = threading.Event()
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.set()
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(timeout=2)
    server.close()


def _hostile_cases(port: int, service_pid: int) -> dict[str, tuple[str, int, dict, set[int]]]:
    """name -> (code, language, ExecuteRequest fields, acceptable statuses)."""
    return {
        "fork_bomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", PY,
                      {"limits": pb.ResourceLimits(wall_time_ms=3000, max_processes=32)}, {S.EXECUTION_STATUS_TIMEOUT}),
        "bash_fork_bomb": (":(){ :|:& };:", BASH, {"limits": pb.ResourceLimits(wall_time_ms=3000, max_processes=32)},
                           {S.EXECUTION_STATUS_TIMEOUT, S.EXECUTION_STATUS_RUNTIME_ERROR, S.EXECUTION_STATUS_OK}),
        "memory_bomb": ("x = []\nwhile True: x.append(bytearray(64 << 20))", PY,
                        {"limits": pb.ResourceLimits(memory_bytes=256 << 20)}, {S.EXECUTION_STATUS_MEMORY_LIMIT}),
        "infinite_loop": ("while True: pass", PY, {"limits": SHORT}, {S.EXECUTION_STATUS_TIMEOUT}),
        "sleep_past_limit": ("import time; time.sleep(30)", PY, {"limits": pb.ResourceLimits(wall_time_ms=1000)},
                             {S.EXECUTION_STATUS_TIMEOUT}),
        "huge_output": ("import sys\nwhile True: sys.stdout.write('y' * 65536)", PY,
                        {"limits": pb.ResourceLimits(max_output_bytes=100_000)}, {S.EXECUTION_STATUS_OUTPUT_LIMIT}),
        "connect_host_loopback": (f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)", PY,
                                  {}, {S.EXECUTION_STATUS_RUNTIME_ERROR}),
        "read_shadow": ("print(open('/etc/shadow').read())", PY, {}, {S.EXECUTION_STATUS_RUNTIME_ERROR}),
        "read_service_environ": (f"print(open('/proc/{service_pid}/environ').read())", PY, {},
                                 {S.EXECUTION_STATUS_RUNTIME_ERROR}),
        "write_outside_workdir": ("open('/usr/pwned', 'w').write('x')", PY, {}, {S.EXECUTION_STATUS_RUNTIME_ERROR}),
        "write_through_proc_root": ("open('/proc/1/root/usr/pwned', 'w').write('x')", PY, {},
                                    {S.EXECUTION_STATUS_RUNTIME_ERROR}),
        "kill_parent": ("import os, time; os.kill(os.getppid(), 9); time.sleep(5)", PY, {"limits": SHORT},
                        {S.EXECUTION_STATUS_RUNTIME_ERROR}),
        "kill_everything": ("import os, time\ntry: os.kill(-1, 9)\nexcept OSError: pass\ntime.sleep(5)", PY,
                            {"limits": SHORT}, {S.EXECUTION_STATUS_RUNTIME_ERROR, S.EXECUTION_STATUS_TIMEOUT}),
        "daemonised_child": ("import os, time\nif os.fork() == 0:\n    os.setsid(); time.sleep(60)\nprint('parent done')",
                             PY, {"limits": SHORT}, {S.EXECUTION_STATUS_OK}),
    }


def test_hostile_programs_are_contained_while_normal_requests_are_served(sandbox, loopback_listener) -> None:
    port, accepted = loopback_listener
    cases = _hostile_cases(port, sandbox.server.process.pid)
    stop = threading.Event()
    normal: list[pb.ExecuteResponse] = []

    def serve_normal_requests() -> None:
        for index in range(200):
            if stop.is_set():
                return
            normal.append(sandbox.execute(f"print({index} * 2)"))

    with ThreadPoolExecutor(4) as workers:
        background = workers.submit(serve_normal_requests)
        futures = {name: workers.submit(sandbox.execute, code, language, **fields)
                   for name, (code, language, fields, _) in cases.items()}
        results = {name: future.result(timeout=120) for name, future in futures.items()}
        stop.set()
        background.result(timeout=60)

    for name, result in results.items():
        allowed = cases[name][3]
        assert result.status in allowed, (name, S.Name(result.status), result.run.stderr[-500:])
    assert results["huge_output"].run.stdout_truncated
    assert len(results["huge_output"].run.stdout) == 100_000
    assert b"Connection refused" in results["connect_host_loopback"].run.stderr or \
        b"Network is unreachable" in results["connect_host_loopback"].run.stderr
    assert not accepted.is_set(), "a sandboxed program reached a service on the host's loopback"
    assert b"No such file" in results["read_shadow"].run.stderr
    assert results["memory_bomb"].run.peak_memory_bytes <= 256 << 20
    assert not os.path.exists("/usr/pwned")
    assert results["sleep_past_limit"].run.wall_time_ms < 5000
    assert normal and all(r.status == S.EXECUTION_STATUS_OK and r.run.stdout == f"{i * 2}\n".encode()
                          for i, r in enumerate(normal))


def test_the_sandbox_has_only_loopback_and_no_route_out(sandbox) -> None:
    result = sandbox.execute(
        "import os, socket\n"
        "print(sorted(os.listdir('/sys/class/net')) if os.path.isdir('/sys/class/net') else 'nosys')\n"
        "print(open('/proc/net/route').read().strip().count('\\n'))\n"
        "print(sorted(name for _, name in socket.if_nameindex()))\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "try:\n    s.connect(('127.0.0.2', 9)); s.send(b'x'); print('sent')\n"
        "except OSError as e: print('errno', e.errno)\n")
    lines = result.run.stdout.decode().splitlines()
    assert result.status == S.EXECUTION_STATUS_OK, result.run.stderr
    assert lines[1] == "0"  # only the header line: no routes
    assert lines[2] == "['lo']"


def test_daemonised_children_do_not_outlive_their_run(sandbox) -> None:
    marker = f"k2rl-sandbox-survivor-{time.time_ns()}"
    result = sandbox.execute(f"import os, time\nif os.fork() == 0:\n    os.setsid(); os.execvp('sleep', ['sleep', '30'])\n"
                             f"print('{marker}')", limits=SHORT)
    assert result.status == S.EXECUTION_STATUS_OK
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        sleepers = [p for p in os.listdir("/proc") if p.isdigit() and _cmdline(p) == b"sleep\x0030\x00"]
        if not sleepers:
            break
        time.sleep(0.1)
    assert not sleepers


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def test_dangerous_syscalls_are_denied(sandbox) -> None:
    result = sandbox.execute(
        "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "print(libc.unshare(0x10000000), ctypes.get_errno())\n"  # CLONE_NEWUSER
        "print(libc.mount(b'none', b'/tmp', b'tmpfs', 0, None), ctypes.get_errno())\n")
    assert result.status == S.EXECUTION_STATUS_OK, result.run.stderr
    assert result.run.stdout.split() == [b"-1", b"1", b"-1", b"1"]  # EPERM
