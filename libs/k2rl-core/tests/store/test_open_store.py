"""open_store(): which backend a URL (or the environment) selects, and its errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from k2rl.core.store import RedisStore, SqliteStore, StoreUnavailable, open_store
from k2rl.core.testing import free_loopback_port


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("K2RL_STATE_DIR", raising=False)
    monkeypatch.chdir(tmp_path)


def test_no_url_and_no_environment_uses_sqlite_under_the_working_directory(
    tmp_path: Path,
) -> None:
    with open_store() as store:
        assert isinstance(store, SqliteStore)
        assert store.path == tmp_path / ".k2rl" / "state.db"
        store.put("k", b"v")
    assert (tmp_path / ".k2rl" / "state.db").is_file()


def test_state_dir_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K2RL_STATE_DIR", str(tmp_path / "state"))
    with open_store() as store:
        assert store.path == tmp_path / "state" / "state.db"


def test_explicit_default_sqlite_path_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("K2RL_STATE_DIR", str(tmp_path / "state"))
    with open_store(default_sqlite_path=tmp_path / "mine.db") as store:
        assert store.path == tmp_path / "mine.db"


def test_sqlite_urls_relative_and_absolute(tmp_path: Path) -> None:
    with open_store("sqlite:///runs/state.db") as store:
        assert store.path.resolve() == tmp_path / "runs" / "state.db"
    with open_store(f"sqlite:///{tmp_path}/abs/state.db") as store:  # sqlite:////tmp/...
        assert store.path == tmp_path / "abs" / "state.db"


@pytest.mark.parametrize(
    "url", ["postgres://user:secret@db/k2rl", "sqlite://", "sqlite:///", "/tmp/state.db"]
)
def test_unknown_url_lists_the_accepted_forms(url: str) -> None:
    with pytest.raises(ValueError, match=r"redis://.*unix://.*sqlite:///") as caught:
        open_store(url)
    assert "secret" not in str(caught.value)


def test_unusable_sqlite_path_is_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(StoreUnavailable, match="K2RL_STATE_DIR"):
        open_store(f"sqlite:///{tmp_path}/a-file/state.db")


def test_unreachable_redis_is_store_unavailable_quickly() -> None:
    port = free_loopback_port()  # nothing listens here
    url = f"redis://:secret@127.0.0.1:{port}/0"
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match=rf":{port}/0 is unreachable.*REDIS_URL") as caught:
        RedisStore(url, connect_timeout_s=0.2, retries=2, max_backoff_s=0.05)
    assert time.monotonic() - started < 5
    assert "secret" not in str(caught.value)


@pytest.mark.needs_system
def test_redis_url_from_the_environment(monkeypatch: pytest.MonkeyPatch, shared_redis) -> None:
    monkeypatch.setenv("REDIS_URL", shared_redis.url)
    with open_store(namespace="from-env") as store:
        assert isinstance(store, RedisStore)
        store.put("k", b"v")
    with open_store("sqlite:///local.db", namespace="from-env") as store:  # a URL beats the env
        assert isinstance(store, SqliteStore) and store.get("k") is None


@pytest.mark.needs_system
def test_redis_over_a_unix_socket(shared_redis) -> None:
    with open_store(f"unix://{shared_redis.socket_path}", namespace="unix") as store:
        assert isinstance(store, RedisStore)
        version = store.put("k", b"v")
    with open_store(shared_redis.url, namespace="unix") as store:  # same server over TCP
        assert store.get("k").version == version
