"""SQLite backend: the embedded default when no REDIS_URL is set.

One database file in WAL mode, so readers never block the writer and several processes can
share the file; a writer waits up to ``busy_timeout_s`` for another process's transaction.
Within a process one connection serves every thread behind a lock: the controller's state
writes are few and small, and a single connection keeps ``close()`` exact.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from k2rl.core.store.base import (
    ABSENT,
    DEFAULT_NAMESPACE,
    Append,
    Check,
    Delete,
    Op,
    Put,
    StateStore,
    StoreError,
    StoreUnavailable,
    VersionConflict,
    Versioned,
)

# PRAGMA user_version of the layout below; bump it with a migration when the layout changes.
_SCHEMA_VERSION = 1
_SCHEMA = (
    # Keys are stored as UTF-8 BLOBs so that SQL ordering is byte order, as in Redis.
    """CREATE TABLE kv (
        ns TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL, version INTEGER NOT NULL,
        PRIMARY KEY (ns, key))""",
    """CREATE TABLE stream_entries (
        ns TEXT NOT NULL, stream TEXT NOT NULL, position INTEGER NOT NULL, value BLOB NOT NULL,
        PRIMARY KEY (ns, stream, position))""",
    "CREATE TABLE revisions (ns TEXT PRIMARY KEY, revision INTEGER NOT NULL)",
    f"PRAGMA user_version = {_SCHEMA_VERSION}",
)
_SCAN_PAGE = 256
# Positions are contiguous from 0, so the length is one past the last; MAX uses the index.
_LENGTH_SQL = (
    "SELECT COALESCE(MAX(position) + 1, 0) FROM stream_entries WHERE ns = ? AND stream = ?"
)


class SqliteStore(StateStore):
    """State store in the SQLite file at ``path``, created with its directory if missing."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        busy_timeout_s: float = 30.0,
    ) -> None:
        super().__init__(namespace)
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(
                self.path,
                timeout=busy_timeout_s,  # SQLite's busy_timeout: wait for other writers
                isolation_level=None,  # we issue BEGIN/COMMIT ourselves
                check_same_thread=False,  # guarded by self._lock instead
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(
                f"cannot open the SQLite state store at {self.path} ({exc}); make sure its "
                "directory is writable, or point K2RL_STATE_DIR or REDIS_URL elsewhere"
            ) from exc
        try:
            self._configure()
        except BaseException:
            self._conn.close()
            raise

    def _configure(self) -> None:
        with self._errors():
            mode = self._enable_wal()
            if mode != "wal":
                raise StoreUnavailable(
                    f"SQLite state store at {self.path} cannot use WAL (journal_mode={mode}); "
                    "put it on a local filesystem"
                )
            # FULL fsyncs the WAL at every commit. NORMAL would already survive a killed
            # process, but may lose the last commits on power loss or a kernel crash; a commit
            # here marks an iteration done or a rollout consumed, so it must outlive the
            # machine, and the controller commits a few times a second at most.
            self._conn.execute("PRAGMA synchronous = FULL")
        with self._transaction() as conn:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            if found == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
            elif found != _SCHEMA_VERSION:
                raise StoreError(
                    f"SQLite state store at {self.path} has schema version {found}, this k2rl "
                    f"reads version {_SCHEMA_VERSION}; use the k2rl release that wrote it"
                )

    def _enable_wal(self) -> str:
        """Switch to WAL; return the journal mode in effect.

        Two processes opening a new file at once both hold a read lock when they ask for the
        exclusive lock this switch needs; SQLite sees the deadlock and fails one at once
        instead of calling the busy handler, so that case is retried here until the timeout.
        """
        deadline = time.monotonic() + self._busy_timeout_s
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn SQLite's operational errors (locked, I/O, disk full) into StoreUnavailable."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise StoreUnavailable(
                    f"SQLite state store at {self.path} stayed locked by another process for "
                    f"more than {self._busy_timeout_s:g}s; is a stuck process holding it?"
                ) from exc
            raise StoreUnavailable(f"SQLite state store at {self.path} failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: BEGIN IMMEDIATE takes the write lock up front, so reads made
        inside it cannot be invalidated by another writer before COMMIT."""
        with self._lock, self._errors():
            self._check_open()
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        with self._lock, self._errors():
            self._check_open()  # a scan may outlive close()
            return self._conn.execute(sql, params).fetchall()

    # --- primitives ---

    def _get(self, key: str) -> Versioned | None:
        rows = self._rows(
            "SELECT value, version FROM kv WHERE ns = ? AND key = ?",
            (self.namespace, key.encode()),
        )
        return Versioned(rows[0][0], rows[0][1]) if rows else None

    def _scan(self, prefix: str) -> Iterator[tuple[str, Versioned]]:
        low = prefix.encode()
        # 0xFF never occurs in UTF-8, so every key starting with the prefix sorts below this.
        high = low + b"\xff"
        while True:
            rows = self._rows(
                "SELECT key, value, version FROM kv WHERE ns = ? AND key >= ? AND key < ? "
                "ORDER BY key LIMIT ?",
                (self.namespace, low, high, _SCAN_PAGE),
            )
            for key, value, version in rows:
                yield key.decode(), Versioned(value, version)
            if len(rows) < _SCAN_PAGE:
                return
            low = rows[-1][0] + b"\x00"  # the smallest key after the last one seen

    def _read(self, stream: str, start: int, limit: int | None) -> list[bytes]:
        rows = self._rows(
            "SELECT value FROM stream_entries WHERE ns = ? AND stream = ? AND position >= ? "
            "ORDER BY position LIMIT ?",
            (self.namespace, stream, start, -1 if limit is None else limit),
        )
        return [value for (value,) in rows]

    def _length(self, stream: str) -> int:
        return int(self._rows(_LENGTH_SQL, (self.namespace, stream))[0][0])

    def _commit(self, ops: tuple[Op, ...]) -> tuple[int, ...]:
        results: list[int] = []
        with self._transaction() as conn:
            revision: int | None = None
            for op in ops:
                if isinstance(op, Append):
                    results.append(self._append(conn, op))
                    continue
                current = self._version(conn, op.key)
                if op.expected_version is not None and op.expected_version != current:
                    raise VersionConflict(op.key, op.expected_version, current)
                match op:
                    case Put(key=key, value=value):
                        if revision is None:
                            revision = self._next_revision(conn)
                        conn.execute(
                            "INSERT INTO kv (ns, key, value, version) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (ns, key) DO UPDATE "
                            "SET value = excluded.value, version = excluded.version",
                            (self.namespace, key.encode(), value, revision),
                        )
                        results.append(revision)
                    case Delete(key=key):
                        if current != ABSENT:
                            conn.execute(
                                "DELETE FROM kv WHERE ns = ? AND key = ?",
                                (self.namespace, key.encode()),
                            )
                        results.append(current)
                    case Check():
                        results.append(current)
        return tuple(results)

    def _close(self) -> None:
        with self._lock:
            self._conn.close()

    # --- helpers inside a write transaction ---

    def _version(self, conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute(
            "SELECT version FROM kv WHERE ns = ? AND key = ?", (self.namespace, key.encode())
        ).fetchone()
        return int(row[0]) if row else ABSENT

    def _next_revision(self, conn: sqlite3.Connection) -> int:
        conn.execute(
            "INSERT INTO revisions (ns, revision) VALUES (?, 1) "
            "ON CONFLICT (ns) DO UPDATE SET revision = revision + 1",
            (self.namespace,),
        )
        (revision,) = conn.execute(
            "SELECT revision FROM revisions WHERE ns = ?", (self.namespace,)
        ).fetchone()
        return int(revision)

    def _append(self, conn: sqlite3.Connection, op: Append) -> int:
        position: int = conn.execute(_LENGTH_SQL, (self.namespace, op.stream)).fetchone()[0]
        conn.execute(
            "INSERT INTO stream_entries (ns, stream, position, value) VALUES (?, ?, ?, ?)",
            (self.namespace, op.stream, position, op.value),
        )
        return position
