"""Durable state: what the controller needs to resume after a crash (DESIGN.md section 2).

``open_store()`` picks the backend from a URL: Redis in production, a SQLite file by default.
The interface and its guarantees are in ``base.py``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

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
    decode_json,
    encode_json,
)
from k2rl.core.store.redis import RedisStore, redact_url
from k2rl.core.store.sqlite import SqliteStore

__all__ = [
    "ABSENT",
    "DEFAULT_NAMESPACE",
    "Append",
    "Check",
    "Delete",
    "Op",
    "Put",
    "RedisStore",
    "SqliteStore",
    "StateStore",
    "StoreError",
    "StoreUnavailable",
    "VersionConflict",
    "Versioned",
    "decode_json",
    "default_state_path",
    "encode_json",
    "open_store",
]

logger = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_SQLITE_SCHEME = "sqlite:///"
_ACCEPTED = (
    "redis://[user:password@]host:port/db, rediss://... (TLS), unix:///path/to/redis.sock, "
    "sqlite:///relative/path.db or sqlite:////absolute/path.db"
)


def default_state_path() -> Path:
    """``$K2RL_STATE_DIR/state.db`` if K2RL_STATE_DIR is set, else ``./.k2rl/state.db``."""
    state_dir = os.environ.get("K2RL_STATE_DIR")
    return Path(state_dir or Path.cwd() / ".k2rl") / "state.db"


def open_store(
    url: str | None = None,
    *,
    namespace: str = DEFAULT_NAMESPACE,
    default_sqlite_path: str | os.PathLike[str] | None = None,
) -> StateStore:
    """Open the state store at ``url``, else at ``$REDIS_URL``, else in a SQLite file.

    The SQLite file is ``default_sqlite_path`` if given, else ``default_state_path()``.
    ``namespace`` separates runs that share a backend. Raises ValueError for a URL that is
    neither Redis nor SQLite, StoreUnavailable if the backend cannot be reached or opened.
    """
    url = url or os.environ.get("REDIS_URL") or None
    if url is None:
        path = Path(default_sqlite_path) if default_sqlite_path else default_state_path()
        logger.info("state store: SQLite at %s (set REDIS_URL to use Redis)", path)
        return SqliteStore(path, namespace=namespace)
    if url.startswith(_REDIS_SCHEMES):
        logger.info("state store: Redis at %s", redact_url(url))
        return RedisStore(url, namespace=namespace)
    if url.startswith(_SQLITE_SCHEME) and len(url) > len(_SQLITE_SCHEME):
        return SqliteStore(url[len(_SQLITE_SCHEME) :], namespace=namespace)
    raise ValueError(f"unsupported state store URL {redact_url(url)!r}; use {_ACCEPTED}")
