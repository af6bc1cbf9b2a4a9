"""SQLite-only behaviour: WAL, lock waits, the schema version."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

import pytest

from k2rl.core.store import SqliteStore, StoreError, StoreUnavailable, Versioned


def test_a_held_write_lock_blocks_writers_but_not_readers(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteStore(path, busy_timeout_s=0.2) as store:
        version = store.put("k", b"v")
        other = sqlite3.connect(path, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process mid-commit
            assert store.get("k") == Versioned(b"v", version)  # WAL: reads go on
            with pytest.raises(StoreUnavailable, match="locked by another process"):
                store.put("k", b"w")
            other.execute("ROLLBACK")
            assert store.put("k", b"w") > version
        finally:
            other.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        SqliteStore(path)
