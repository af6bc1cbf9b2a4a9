"""POSIX shared-memory buffers exposed as torch uint8 tensors (the CPU IPC path).

A segment is a file under /dev/shm (what ``shm_open`` creates), mapped MAP_SHARED with
``torch.from_file`` so the mapping lives exactly as long as tensors that view it.

Rules this module enforces, from the anchor's users (MoonshotAI/checkpoint-engine issues):
  * a process maps a segment at most once: attaching a name it already holds returns the
    same buffer, and host-memory registration with CUDA (pinning) happens at most once;
  * segments do not outlive a crash: names carry the creating pid, the creator unlinks
    its segments at exit, and ``reap_orphans`` removes those whose creator died (kill -9).
"""

from __future__ import annotations

import atexit
import os
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

SHM_DIR = Path("/dev/shm")
NAME_PREFIX = "k2rl-"
_NAME = re.compile(r"k2rl-[A-Za-z0-9_.-]*-p(\d+)-[0-9a-f]{8}")
_TAG = re.compile(r"[A-Za-z0-9_.]{1,40}")


class SharedMemoryError(OSError):
    """A segment could not be created, found or mapped (the message names it)."""


@dataclass(eq=False)
class SharedBuffer:
    """A mapped segment. ``tensor`` is a uint8 view of all ``byte_size`` bytes."""

    name: str  # without the leading "/" of shm_open; the file is /dev/shm/<name>
    byte_size: int
    tensor: torch.Tensor
    owner: bool
    _pinned: bool = field(default=False, repr=False)
    _refs: int = field(default=1, repr=False)

    @property
    def shm_name(self) -> str:
        """The name as passed to shm_open (what ``IpcHandle.shm_name`` carries)."""
        return "/" + self.name

    def pin(self) -> None:
        """Register the pages with CUDA for fast H2D/D2H; no-op without CUDA or if done."""
        with _LOCK:
            if self._pinned or not torch.cuda.is_available():
                return
            result = torch.cuda.cudart().cudaHostRegister(self.tensor.data_ptr(), self.byte_size, 0)
            if int(result) != 0:
                raise SharedMemoryError(f"cudaHostRegister of {self.shm_name} failed with CUDA error {int(result)}")
            self._pinned = True

    def close(self) -> None:
        """Drop this holder's reference; the last one unmaps (and unlinks, for the creator)."""
        with _LOCK:
            self._refs -= 1
            if self._refs > 0:
                return
            _OPEN.pop(self.name, None)
            if self._pinned:
                torch.cuda.cudart().cudaHostUnregister(self.tensor.data_ptr())
                self._pinned = False
            if self.owner:
                _unlink(self.name)
            # The mapping itself goes when the last tensor viewing it is freed.
            self.tensor = torch.empty(0, dtype=torch.uint8)

    def __enter__(self) -> SharedBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LOCK = threading.RLock()
_OPEN: dict[str, SharedBuffer] = {}


def create_buffer(byte_size: int, tag: str = "buf") -> SharedBuffer:
    """Create and map a new zero-filled segment named ``k2rl-<tag>-p<pid>-<random>``."""
    if byte_size <= 0:
        raise ValueError(f"byte_size must be positive, got {byte_size}")
    if not _TAG.fullmatch(tag):
        raise ValueError(f"tag must be 1-40 characters from [A-Za-z0-9_.], got {tag!r}")
    name = f"{NAME_PREFIX}{tag}-p{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path = SHM_DIR / name
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    except OSError as error:
        raise SharedMemoryError(f"cannot create shared memory segment {path}: {error}") from error
    try:
        os.ftruncate(fd, byte_size)
    except OSError as error:
        os.close(fd)
        _unlink(name)
        raise SharedMemoryError(f"cannot size {path} to {byte_size} bytes (is /dev/shm large enough?): {error}") from error
    os.close(fd)
    buffer = SharedBuffer(name, byte_size, _map(path, byte_size), owner=True)
    with _LOCK:
        _OPEN[name] = buffer
    return buffer


def attach_buffer(shm_name: str, byte_size: int) -> SharedBuffer:
    """Map an existing segment (``shm_name`` with or without the leading "/").

    Attaching a segment this process already holds returns that buffer (one more
    reference; call ``close`` once per attach) instead of mapping it a second time.
    """
    name = shm_name.removeprefix("/")
    if not name or "/" in name:
        raise ValueError(f"invalid shared memory name {shm_name!r}")
    with _LOCK:
        held = _OPEN.get(name)
        if held is not None:
            if held.byte_size < byte_size:
                raise SharedMemoryError(f"{shm_name} holds {held.byte_size} bytes, {byte_size} requested")
            held._refs += 1
            return held
        path = SHM_DIR / name
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            raise SharedMemoryError(f"shared memory segment {shm_name} does not exist (its owner exited?)") from None
        if actual < byte_size:
            raise SharedMemoryError(f"{shm_name} holds {actual} bytes, {byte_size} requested")
        buffer = SharedBuffer(name, byte_size, _map(path, byte_size), owner=False)
        _OPEN[name] = buffer
        return buffer


def reap_orphans(prefix: str = NAME_PREFIX) -> list[str]:
    """Unlink k2rl segments whose creating process no longer exists; return their names."""
    reaped = []
    for path in SHM_DIR.glob(prefix + "*"):
        match = _NAME.fullmatch(path.name)
        if match and not _pid_alive(int(match.group(1))):
            _unlink(path.name)
            reaped.append(path.name)
    return reaped


def _map(path: Path, byte_size: int) -> torch.Tensor:
    return torch.from_file(str(path), shared=True, size=byte_size, dtype=torch.uint8)


def _unlink(name: str) -> None:
    try:
        (SHM_DIR / name).unlink()
    except FileNotFoundError:
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _unlink_own_segments() -> None:
    # Normal exit and unhandled exceptions; kill -9 is covered by reap_orphans.
    # A forked child inherits the registry; the pid in the name keeps it off the parent's.
    pid = str(os.getpid())
    for name, buffer in list(_OPEN.items()):
        match = _NAME.fullmatch(name)
        if buffer.owner and match is not None and match.group(1) == pid:
            _unlink(name)
