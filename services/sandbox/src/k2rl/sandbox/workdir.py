"""Host-side access to working directories that untrusted programs also write to.

A program can leave symlinks behind (``ln -s /etc/shadow out.txt``), so every host-side
read or write resolves the path and refuses anything that lands outside the directory, and
opens the final component with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path, PurePosixPath

from k2rl.core.errors import InvalidArgument, NotFound


def check_relative(path: str, field: str) -> PurePosixPath:
    """A request path that must stay inside the working directory."""
    if not path or "\x00" in path:
        raise InvalidArgument("path must be non-empty and contain no NUL byte", field=field)
    pure = PurePosixPath(path)
    if pure.is_absolute() or ".." in pure.parts:
        raise InvalidArgument(f"path {path!r} must be relative and must not contain '..'", field=field)
    if pure == PurePosixPath("."):
        raise InvalidArgument(f"path {path!r} names the working directory itself, not a file", field=field)
    return pure


class Workdir:
    """One working directory on the host, created empty and removed with ``remove()``."""

    def __init__(self, root: Path, prefix: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix, dir=root))

    def _inside(self, relative: PurePosixPath, field: str) -> Path:
        target = Path(os.path.realpath(self.path / relative))
        base = Path(os.path.realpath(self.path))
        if target != base and base not in target.parents:
            raise InvalidArgument(f"{relative} resolves outside the working directory (a symlink?)",
                                  field=field)
        return target

    def write(self, relative: PurePosixPath, content: bytes, *, field: str, append: bool = False,
              mode: int = 0o644, owner: tuple[int, int] | None = None) -> int:
        """Write a file (parents created); returns its size afterwards."""
        parent = self._inside(relative.parent, field) if relative.parent != PurePosixPath(".") else self.path
        parent.mkdir(parents=True, exist_ok=True)
        self._inside(relative.parent, field)  # mkdir must not have followed a link out
        target = parent / relative.name
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
        try:
            fd = os.open(target, flags, mode)
        except OSError as error:
            raise InvalidArgument(f"cannot write {relative}: {error.strerror}", field=field) from None
        try:
            os.fchmod(fd, mode)
            if owner is not None:
                os.fchown(fd, *owner)
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            return os.fstat(fd).st_size
        finally:
            os.close(fd)

    def read(self, relative: PurePosixPath, offset: int, max_bytes: int, *, field: str) -> tuple[bytes, int]:
        """Up to ``max_bytes`` from ``offset``, and the file's size."""
        target = self._inside(relative, field)
        try:
            fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            raise NotFound(f"no file {relative} in the working directory", field=field) from None
        except OSError as error:
            raise InvalidArgument(f"cannot read {relative}: {error.strerror}", field=field) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidArgument(f"{relative} is not a regular file", field=field)
            return os.pread(fd, max_bytes, offset), info.st_size
        finally:
            os.close(fd)

    def chown_tree(self, owner: tuple[int, int]) -> None:
        for directory, _, files in os.walk(self.path):
            os.chown(directory, *owner, follow_symlinks=False)
            for name in files:
                os.chown(os.path.join(directory, name), *owner, follow_symlinks=False)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
