"""Redis-only behaviour: outages, retried commits, the durability warning."""

from __future__ import annotations

import logging
import uuid

import pytest

from k2rl.core.store import RedisStore, StoreUnavailable, Versioned

pytestmark = pytest.mark.needs_system


def test_an_outage_raises_store_unavailable_and_the_store_recovers(private_redis) -> None:
    with RedisStore(private_redis.url, retries=1, max_backoff_s=0.05) as store:
        version = store.put("weights/version", b"7")
        private_redis.kill()
        with pytest.raises(StoreUnavailable, match=r"unreachable.*REDIS_URL"):
            store.get("weights/version")
        private_redis.start()  # appendfsync always: the write outlived the server
        assert store.get("weights/version") == Versioned(b"7", version)


def test_a_retried_commit_is_applied_once(shared_redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retry after a lost reply resends the same commit id; it must get the first reply
    back, not append twice or conflict with its own write."""
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=7))  # every commit: one id
    with RedisStore(shared_redis.url, namespace="retried") as store:
        first = store.compare_and_set("cursor", b"1", 0)
        assert store.compare_and_set("cursor", b"1", 0) == first
        assert store.append("log", b"x") == first  # the first commit's reply, replayed
        assert store.length("log") == 0 and store.get("cursor") == Versioned(b"1", first)


def test_opening_warns_when_the_server_does_not_persist(
    shared_redis, private_redis, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="k2rl.core.store.redis"):
        RedisStore(private_redis.url).close()  # appendonly yes
        assert not caplog.records
        RedisStore(shared_redis.url).close()  # appendonly no
    assert "--appendonly yes" in caplog.text
