"""POSIX shared-memory buffers: shared across processes, mapped once, cleaned up after crashes."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from k2rl.weights import SharedMemoryError, attach_buffer, create_buffer, reap_orphans, shm
from k2rl.weights.shm import SHM_DIR

PYTHON = sys.executable


def _run(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout)


def test_bytes_written_by_one_process_are_seen_by_another_and_back() -> None:
    with create_buffer(4096, "t") as buffer:
        buffer.tensor[:16] = torch.arange(16, dtype=torch.uint8)
        result = _run(f"""
            import torch
            from k2rl.weights import attach_buffer
            b = attach_buffer({buffer.shm_name!r}, 4096)
            assert b.tensor[:16].tolist() == list(range(16)), b.tensor[:16]
            b.tensor[100] = 77
            b.close()
        """)
        assert result.returncode == 0, result.stderr
        assert int(buffer.tensor[100]) == 77
        assert (SHM_DIR / buffer.name).exists(), "an attaching process must not unlink the owner's segment"
    assert not (SHM_DIR / buffer.name).exists()


def test_attaching_twice_in_one_process_maps_once() -> None:
    with create_buffer(1024, "t") as owner:
        first = attach_buffer(owner.shm_name, 1024)
        second = attach_buffer(owner.name, 512)
        assert first is owner and second is owner
        assert first.tensor.data_ptr() == owner.tensor.data_ptr()
        first.close()
        second.close()
        assert (SHM_DIR / owner.name).exists(), "the creator still holds a reference"
    assert not (SHM_DIR / owner.name).exists()


def test_missing_or_too_small_segments_fail_with_a_clear_error() -> None:
    with pytest.raises(SharedMemoryError, match="does not exist"):
        attach_buffer("/k2rl-nope-p1-00000000", 10)
    with create_buffer(64, "t") as buffer:
        with pytest.raises(SharedMemoryError, match="holds 64 bytes"):
            attach_buffer(buffer.shm_name, 10**6)
        result = _run(f"""
            from k2rl.weights import attach_buffer
            attach_buffer({buffer.shm_name!r}, 10**6)
        """)
        assert result.returncode != 0 and "holds 64 bytes" in result.stderr


def test_segments_are_unlinked_at_normal_exit_and_reaped_after_kill_9() -> None:
    result = _run("""
        from k2rl.weights import create_buffer
        print(create_buffer(128, "exit").name)
    """)
    assert result.returncode == 0, result.stderr
    assert not (SHM_DIR / result.stdout.strip()).exists()

    child = subprocess.Popen([PYTHON, "-c", textwrap.dedent("""
        import sys, time
        from k2rl.weights import create_buffer
        print(create_buffer(128, "crash").name, flush=True)
        time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        name = child.stdout.readline().strip()
        assert name and (SHM_DIR / name).exists()
        assert name not in reap_orphans(), "a live creator's segment must not be reaped"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert (SHM_DIR / name).exists(), "kill -9 runs no cleanup: the segment is orphaned"
    assert name in reap_orphans()
    assert not (SHM_DIR / name).exists()


def test_forked_child_exit_does_not_unlink_the_parents_segment() -> None:
    with create_buffer(64, "t") as buffer:
        pid = os.fork()
        if pid == 0:  # the child runs the exit hook it inherited, then leaves without pytest
            shm._unlink_own_segments()
            os._exit(0)
        os.waitpid(pid, 0)
        assert (SHM_DIR / buffer.name).exists()
