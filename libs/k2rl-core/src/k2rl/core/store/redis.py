"""Redis backend: the production state store (``REDIS_URL``).

Layout, all under ``k2rl:{<namespace>}:`` (the braces are a cluster hash tag, so a namespace
lives in one slot and a commit's script may touch all of its keys):

- ``kv:<key>``        hash ``{value, version}``
- ``index``           sorted set of every key (all scores 0), for ordered prefix scans
- ``revision``        the namespace's revision counter (see base.py, "Versions")
- ``stream:<name>``   list, one element per entry
- ``commit:<id>``     the reply of a recent commit, for retries (see ``_COMMIT_LUA``)

Durability is the server's: run it with ``appendonly yes`` (``appendfsync always`` for no loss
at all, ``everysec`` for at most a second). Opening a store warns when AOF is off.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from k2rl.core.store.base import (
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

logger = logging.getLogger(__name__)

_SCAN_PAGE = 256
# How long a commit's reply is kept for retries; far longer than any retry sequence.
_COMMIT_RECORD_TTL_S = 600

# Applies one commit atomically (Redis runs a script with nothing interleaved).
# KEYS: revision counter, key index, this commit's record, then one data key per op.
# ARGV: record TTL, then four per op: kind, expected version ('' = none), key name, value.
# Returns {1, result per op} or, writing nothing, {0, failing op (1-based), its version}.
#
# A connection error can lose the reply of a commit the server did apply; the client then
# retries with the same commit id, and the stored record makes the retry return the first
# reply instead of appending twice or reporting a conflict with its own write.
_COMMIT_LUA = """
local record = redis.call('GET', KEYS[3])
if record then return cjson.decode(record) end
local n = (#ARGV - 1) / 4
local current = {}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  if ARGV[a] ~= 'append' then
    current[i] = tonumber(redis.call('HGET', KEYS[3 + i], 'version') or '0')
    if ARGV[a + 1] ~= '' and tonumber(ARGV[a + 1]) ~= current[i] then
      return {0, i, current[i]}
    end
  end
end
local revision = nil
local reply = {1}
for i = 1, n do
  local a = 2 + (i - 1) * 4
  local kind, key = ARGV[a], KEYS[3 + i]
  if kind == 'put' then
    revision = revision or redis.call('INCR', KEYS[1])
    redis.call('HSET', key, 'value', ARGV[a + 3], 'version', revision)
    redis.call('ZADD', KEYS[2], 0, ARGV[a + 2])
    reply[i + 1] = revision
  elseif kind == 'delete' then
    if current[i] > 0 then
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[2], ARGV[a + 2])
    end
    reply[i + 1] = current[i]
  elseif kind == 'check' then
    reply[i + 1] = current[i]
  else
    reply[i + 1] = redis.call('RPUSH', key, ARGV[a + 3]) - 1
  end
end
redis.call('SET', KEYS[3], cjson.encode(reply), 'EX', ARGV[1])
return reply
"""


def redact_url(url: str) -> str:
    """``url`` without password or query (which may carry one), for messages and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class RedisStore(StateStore):
    """State store on a Redis server; ``url`` is ``redis://``, ``rediss://`` or ``unix://``.

    Connection errors and timeouts are retried ``retries`` times with exponential backoff and
    jitter (at most ``max_backoff_s`` between tries), then raised as StoreUnavailable.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        retries: int = 5,
        max_backoff_s: float = 1.0,
    ) -> None:
        super().__init__(namespace)
        self.url = redact_url(url)
        self._retries = retries
        self._client = redis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout_s,
            socket_timeout=timeout_s,
            # Retries ConnectionError (which includes BusyLoadingError, a restarting server
            # replaying its AOF) and TimeoutError.
            retry=Retry(ExponentialWithJitterBackoff(cap=max_backoff_s, base=0.05), retries),
        )
        prefix = f"k2rl:{{{namespace}}}:".encode()
        self._kv_prefix = prefix + b"kv:"
        self._stream_prefix = prefix + b"stream:"
        self._commit_prefix = prefix + b"commit:"
        self._index_key = prefix + b"index"
        self._revision_key = prefix + b"revision"
        self._commit_script = self._client.register_script(_COMMIT_LUA)
        try:
            self._call(self._client.ping)
            self._warn_if_volatile()
        except BaseException:
            self._client.close()
            raise

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call, turning redis-py's errors into the store's."""
        self._check_open()  # a scan may outlive close()
        try:
            return fn(*args, **kwargs)
        except redis.AuthenticationError as exc:
            raise StoreUnavailable(
                f"Redis at {self.url} rejected the credentials ({exc}); "
                "check the user and password in REDIS_URL"
            ) from exc
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable(
                f"Redis at {self.url} is unreachable after {self._retries} retries ({exc}); "
                "check that redis-server is running and that REDIS_URL points at it"
            ) from exc
        except redis.ResponseError as exc:
            raise StoreError(f"Redis at {self.url} refused a state-store command: {exc}") from exc

    def _warn_if_volatile(self) -> None:
        with contextlib.suppress(StoreError):  # managed services often disable CONFIG
            config = self._call(self._client.config_get, "appendonly")
            if config.get("appendonly") == "no":  # redis-py decodes CONFIG replies
                logger.warning(
                    "Redis at %s runs with appendonly no: state written since its last RDB "
                    "snapshot is lost if the server dies; run it with --appendonly yes",
                    self.url,
                )

    # --- primitives ---

    def _get(self, key: str) -> Versioned | None:
        value, version = self._call(
            self._client.hmget, self._kv_prefix + key.encode(), "value", "version"
        )
        return None if value is None else Versioned(value, int(version))

    def _scan(self, prefix: str) -> Iterator[tuple[str, Versioned]]:
        encoded = prefix.encode()
        # Lexicographic range over the index; 0xFF never occurs in UTF-8, so every key
        # starting with the prefix sorts below it.
        low, high = b"[" + encoded, b"(" + encoded + b"\xff"
        while True:
            keys = self._call(
                self._client.zrangebylex, self._index_key, low, high, start=0, num=_SCAN_PAGE
            )
            if not keys:
                return
            pipe = self._client.pipeline(transaction=False)
            for key in keys:
                pipe.hmget(self._kv_prefix + key, "value", "version")
            for key, (value, version) in zip(keys, self._call(pipe.execute), strict=True):
                if value is not None:  # deleted between the index read and this one
                    yield key.decode(), Versioned(value, int(version))
            if len(keys) < _SCAN_PAGE:
                return
            low = b"(" + keys[-1]

    def _read(self, stream: str, start: int, limit: int | None) -> list[bytes]:
        stop = -1 if limit is None else start + limit - 1
        return list(
            self._call(self._client.lrange, self._stream_prefix + stream.encode(), start, stop)
        )

    def _length(self, stream: str) -> int:
        return int(self._call(self._client.llen, self._stream_prefix + stream.encode()))

    def _commit(self, ops: tuple[Op, ...]) -> tuple[int, ...]:
        commit_id = uuid.uuid4().hex.encode()
        keys = [self._revision_key, self._index_key, self._commit_prefix + commit_id]
        args: list[bytes | int] = [_COMMIT_RECORD_TTL_S]
        for op in ops:
            match op:
                case Append(stream=stream, value=value):
                    keys.append(self._stream_prefix + stream.encode())
                    args += [b"append", b"", b"", value]
                case Put(key=key, value=value, expected_version=expected):
                    keys.append(self._kv_prefix + key.encode())
                    args += [b"put", _expected(expected), key.encode(), value]
                case Delete(key=key, expected_version=expected):
                    keys.append(self._kv_prefix + key.encode())
                    args += [b"delete", _expected(expected), key.encode(), b""]
                case Check(key=key, expected_version=expected):
                    keys.append(self._kv_prefix + key.encode())
                    args += [b"check", _expected(expected), key.encode(), b""]
        reply = self._call(self._commit_script, keys=keys, args=args)
        if reply[0] == 0:
            _, index, actual = reply
            failed = ops[index - 1]
            assert not isinstance(failed, Append) and failed.expected_version is not None
            raise VersionConflict(failed.key, failed.expected_version, actual)
        return tuple(reply[1:])

    def _close(self) -> None:
        self._client.close()


def _expected(version: int | None) -> bytes:
    return b"" if version is None else str(version).encode()
