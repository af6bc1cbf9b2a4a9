"""The state-store contract: versioned keys, append-only streams, atomic multi-key commits.

Everything the controller needs to resume after a crash lives behind this interface
(DESIGN.md section 2, "State"): the partial-rollout buffer, the dataset cursor, run and
iteration records, the current weight version. Redis (production) and SQLite (embedded
default) implement it and pass the same contract tests.

Versions. Every commit that writes a key takes the namespace's next *revision*, a counter
that only grows, and stamps the keys it writes with it. A key's version therefore strictly
increases with each write and is never reused, not even after the key is deleted and created
again, so a compare-and-set cannot be fooled by a delete and re-create in between (the ABA
problem). Version 0 (``ABSENT``) means "the key does not exist".

Expected versions. Wherever an operation takes ``expected_version``, an int is a condition
(0: the key must not exist; n: the key must be at version n) and ``None`` means "no
condition". A failed condition raises ``VersionConflict`` and writes nothing.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

ABSENT = 0
DEFAULT_NAMESPACE = "default"
_NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class StoreError(Exception):
    """Base class of the errors a state store raises (besides TypeError/ValueError on bad input)."""


class VersionConflict(StoreError):
    """A write's expected version did not match the key's current version; nothing was written."""

    def __init__(self, key: str, expected: int, actual: int) -> None:
        self.key = key
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"version conflict on {key!r}: expected {_describe_version(expected)}, "
            f"found {_describe_version(actual)}; re-read the key and retry"
        )


class StoreUnavailable(StoreError):
    """The backend cannot be reached, opened or written; the message says what to check."""


def _describe_version(version: int) -> str:
    return "no key" if version == ABSENT else f"version {version}"


@dataclass(frozen=True, slots=True)
class Versioned:
    """A stored value and the version it was written at."""

    value: bytes
    version: int

    def json(self) -> Any:
        return decode_json(self.value)


def encode_json(obj: Any) -> bytes:
    """Compact, key-sorted (so equal objects give equal bytes), strict JSON as UTF-8."""
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()


def decode_json(data: bytes) -> Any:
    return json.loads(data)


# --- input validation, shared by every backend so they reject exactly the same things ---


def _check_name(name: object, what: str = "key") -> str:
    """Return ``name`` if it is a usable key or stream name; raise TypeError/ValueError if not."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be str, got {type(name).__name__}")
    if not name:
        raise ValueError(f"{what} must not be empty")
    try:
        name.encode()
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what} {name!r} is not valid UTF-8: {exc.reason}") from None
    return name


def _check_value(value: object) -> bytes:
    if not isinstance(value, bytes):
        hint = "; encode it (encode_json() for JSON)" if isinstance(value, str) else ""
        raise TypeError(f"value must be bytes, got {type(value).__name__}{hint}")
    return value


def _check_count(value: object, what: str) -> int:
    """Return ``value`` if it is an int >= 0 (a version, offset or limit); raise if not."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value}")
    return value


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str) or not _NAMESPACE_PATTERN.fullmatch(namespace):
        raise ValueError(
            f"namespace must be 1-64 characters from [A-Za-z0-9_.-], got {namespace!r}"
        )
    return namespace


# --- the operations of a commit ---


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` at ``key``. Commit result: the key's new version."""

    key: str
    value: bytes
    expected_version: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.key)
        _check_value(self.value)
        if self.expected_version is not None:
            _check_count(self.expected_version, "expected_version")


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``. Commit result: the version removed, ``ABSENT`` if there was none."""

    key: str
    expected_version: int | None = None

    def __post_init__(self) -> None:
        _check_name(self.key)
        if self.expected_version is not None:
            _check_count(self.expected_version, "expected_version")


@dataclass(frozen=True, slots=True)
class Check:
    """Write nothing; fail the commit unless ``key`` is at ``expected_version``.

    Commit result: that version. Lets a commit depend on a key it does not write.
    """

    key: str
    expected_version: int

    def __post_init__(self) -> None:
        _check_name(self.key)
        _check_count(self.expected_version, "expected_version")


@dataclass(frozen=True, slots=True)
class Append:
    """Add ``value`` at the end of ``stream``. Commit result: the entry's offset (0-based)."""

    stream: str
    value: bytes

    def __post_init__(self) -> None:
        _check_name(self.stream, "stream")
        _check_value(self.value)


Op = Put | Delete | Check | Append


class StateStore(abc.ABC):
    """Durable, versioned key/value records and append-only streams in one namespace.

    Keys and stream names are non-empty str, values are bytes. Keys and streams are separate
    spaces: a stream may share its name with a key. Safe to share between threads; open one
    store per process (connections must not cross ``fork()``). Subclasses implement the
    underscored primitives; the public methods validate input and check the store is open.
    """

    def __init__(self, namespace: str) -> None:
        self.namespace = _check_namespace(namespace)
        self._closed = False

    # --- keys ---

    def get(self, key: str) -> Versioned | None:
        self._check_open()
        return self._get(_check_name(key))

    def put(self, key: str, value: bytes) -> int:
        """Write unconditionally; return the new version."""
        return self.commit([Put(key, value)])[0]

    def compare_and_set(self, key: str, value: bytes, expected_version: int) -> int:
        """Write only if ``key`` is at ``expected_version`` (0: absent); return the new version.

        Raises VersionConflict, writing nothing, if the key is at another version.
        """
        expected_version = _check_count(expected_version, "expected_version")
        return self.commit([Put(key, value, expected_version)])[0]

    def delete(self, key: str, expected_version: int | None = None) -> bool:
        """Remove ``key``; return whether it existed. With ``expected_version``, only at it."""
        return self.commit([Delete(key, expected_version)])[0] != ABSENT

    def scan(self, prefix: str = "") -> Iterator[tuple[str, Versioned]]:
        """Yield ``(key, Versioned)`` for the keys starting with ``prefix``, sorted by key.

        Sorted by code point (equal to UTF-8 byte order). Read in pages, so it is not a
        snapshot: each item was current when its page was read, a key written during the scan
        may or may not appear, and a key deleted before its page is read does not.
        """
        self._check_open()
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, got {type(prefix).__name__}")
        if prefix:
            _check_name(prefix, "prefix")
        return self._scan(prefix)

    # --- streams ---

    def append(self, stream: str, value: bytes) -> int:
        """Add an entry at the end of ``stream``; return its offset. Entries never change."""
        return self.commit([Append(stream, value)])[0]

    def read(self, stream: str, start: int = 0, limit: int | None = None) -> list[bytes]:
        """Entries ``start, start + 1, ...`` of ``stream``, at most ``limit`` of them."""
        self._check_open()
        _check_name(stream, "stream")
        _check_count(start, "start")
        if limit is not None:
            _check_count(limit, "limit")
            if limit == 0:
                return []
        return self._read(stream, start, limit)

    def length(self, stream: str) -> int:
        """Number of entries in ``stream`` (0 if it was never appended to)."""
        self._check_open()
        return self._length(_check_name(stream, "stream"))

    # --- atomic commits ---

    def commit(self, ops: Iterable[Op]) -> tuple[int, ...]:
        """Apply ``ops`` atomically: every condition holds and all are applied, or none is.

        Returns one int per op (see each op's docstring). Raises VersionConflict for the first
        failed condition. A key may appear in at most one op of a commit; a stream in many.
        All keys written by one commit get the same new version.
        """
        self._check_open()
        ops = tuple(ops)
        keys: set[str] = set()
        for op in ops:
            if not isinstance(op, Put | Delete | Check | Append):
                raise TypeError(f"commit takes Put/Delete/Check/Append, got {type(op).__name__}")
            if isinstance(op, Append):
                continue
            if op.key in keys:
                raise ValueError(f"key {op.key!r} appears in more than one op of a commit")
            keys.add(op.key)
        return self._commit(ops) if ops else ()

    # --- lifecycle ---

    def close(self) -> None:
        """Release connections. Idempotent; any later call raises StoreError."""
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError(f"{type(self).__name__} is closed")

    # --- backend primitives: arguments are already validated ---

    @abc.abstractmethod
    def _get(self, key: str) -> Versioned | None: ...

    @abc.abstractmethod
    def _scan(self, prefix: str) -> Iterator[tuple[str, Versioned]]: ...

    @abc.abstractmethod
    def _read(self, stream: str, start: int, limit: int | None) -> list[bytes]: ...

    @abc.abstractmethod
    def _length(self, stream: str) -> int: ...

    @abc.abstractmethod
    def _commit(self, ops: tuple[Op, ...]) -> tuple[int, ...]: ...

    @abc.abstractmethod
    def _close(self) -> None: ...
