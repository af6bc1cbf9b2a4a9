"""The StateStore contract; every test runs on SQLite and on a real redis-server."""

from __future__ import annotations

import random

import pytest

from k2rl.core.store import (
    ABSENT,
    Append,
    Check,
    Delete,
    Put,
    StateStore,
    StoreError,
    VersionConflict,
    Versioned,
    decode_json,
    encode_json,
)

# --- keys and versions ---


def test_get_of_a_missing_key_is_none(store: StateStore) -> None:
    assert store.get("missing") is None


def test_every_put_increases_the_version(store: StateStore) -> None:
    versions = [store.put("cursor", str(i).encode()) for i in range(5)]
    assert versions == sorted(set(versions)) and versions[0] > ABSENT
    assert store.get("cursor") == Versioned(b"4", versions[-1])


def test_values_are_stored_byte_exact(store: StateStore) -> None:
    blob = bytes(range(256)) * 64
    store.put("blob", blob)
    store.put("empty", b"")
    assert store.get("blob").value == blob
    assert store.get("empty") == Versioned(b"", store.get("empty").version)


def test_a_recreated_key_never_reuses_an_old_version(store: StateStore) -> None:
    first = store.put("k", b"a")
    assert store.delete("k")
    second = store.put("k", b"b")
    assert second > first
    with pytest.raises(VersionConflict):  # a CAS holding the old version must not succeed
        store.compare_and_set("k", b"c", first)


def test_compare_and_set_succeeds_at_the_expected_version(store: StateStore) -> None:
    v1 = store.put("weights/version", b"1")
    v2 = store.compare_and_set("weights/version", b"2", v1)
    assert v2 > v1
    assert store.get("weights/version") == Versioned(b"2", v2)


def test_compare_and_set_conflict_reports_versions_and_writes_nothing(store: StateStore) -> None:
    v1 = store.put("k", b"a")
    v2 = store.put("k", b"b")
    with pytest.raises(VersionConflict) as caught:
        store.compare_and_set("k", b"c", v1)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("k", v1, v2)
    assert "re-read" in str(caught.value)
    assert store.get("k") == Versioned(b"b", v2)


def test_expected_version_zero_creates_only_if_absent(store: StateStore) -> None:
    version = store.compare_and_set("run/1", b"created", ABSENT)
    with pytest.raises(VersionConflict) as caught:
        store.compare_and_set("run/1", b"again", ABSENT)
    assert caught.value.actual == version
    assert store.get("run/1") == Versioned(b"created", version)


def test_delete_reports_whether_the_key_existed(store: StateStore) -> None:
    store.put("k", b"v")
    assert store.delete("k") is True
    assert store.delete("k") is False
    assert store.get("k") is None


def test_delete_at_a_version(store: StateStore) -> None:
    v1 = store.put("k", b"a")
    v2 = store.put("k", b"b")
    with pytest.raises(VersionConflict):
        store.delete("k", expected_version=v1)
    assert store.get("k") == Versioned(b"b", v2)
    assert store.delete("k", expected_version=v2)
    with pytest.raises(VersionConflict):
        store.delete("k", expected_version=v2)
    assert store.delete("k", expected_version=ABSENT) is False


# --- prefix scans ---


def test_scan_yields_matching_keys_in_sorted_order(store: StateStore) -> None:
    keys = ["partial/10", "partial/2", "partial/", "partial/a/b", "partial0", "partia", "z",
            "partial/\u00e9", "partial/\U0001f600", "partial/~"]  # fmt: skip
    for key in random.Random(0).sample(keys, len(keys)):
        store.put(key, key.encode())
    found = [(key, item.value) for key, item in store.scan("partial/")]
    expected = sorted(k for k in keys if k.startswith("partial/"))
    assert found == [(k, k.encode()) for k in expected]
    assert [key for key, _ in store.scan()] == sorted(keys)
    assert list(store.scan("nothing/")) == []


def test_scan_pages_through_many_keys_and_skips_deleted_ones(store: StateStore) -> None:
    for i in range(600):  # more than two pages of 256
        store.put(f"rollout/{i:04d}", b"x")
    for i in range(0, 600, 3):
        store.delete(f"rollout/{i:04d}")
    keys = [key for key, _ in store.scan("rollout/")]
    assert keys == [f"rollout/{i:04d}" for i in range(600) if i % 3]


def test_scan_carries_current_versions(store: StateStore) -> None:
    version = store.put("a", b"1")
    assert dict(store.scan()) == {"a": Versioned(b"1", version)}


# --- streams ---


def test_append_returns_consecutive_offsets(store: StateStore) -> None:
    assert [store.append("iterations", f"it{i}".encode()) for i in range(5)] == [0, 1, 2, 3, 4]
    assert store.length("iterations") == 5
    assert store.read("iterations") == [f"it{i}".encode() for i in range(5)]


def test_read_ranges(store: StateStore) -> None:
    entries = [f"e{i}".encode() for i in range(10)]
    for entry in entries:
        store.append("log", entry)
    assert store.read("log", 3) == entries[3:]
    assert store.read("log", 3, 4) == entries[3:7]
    assert store.read("log", 8, 100) == entries[8:]
    assert store.read("log", 0, 0) == []
    assert store.read("log", 10) == []
    assert store.read("log", 50, 5) == []


def test_unknown_stream_is_empty_and_streams_are_separate(store: StateStore) -> None:
    assert store.length("never") == 0 and store.read("never") == []
    store.append("a", b"1")
    store.put("a", b"key, not stream")  # keys and streams are separate spaces
    assert store.read("a") == [b"1"] and store.read("b") == []


# --- commits ---


def test_commit_applies_every_op_and_reports_each_result(store: StateStore) -> None:
    cursor = store.put("dataset/cursor", b"10")
    partial = store.put("partial/7", b"paused")
    store.append("iterations", b"it0")
    results = store.commit(
        [
            Put("dataset/cursor", b"42", expected_version=cursor),
            Delete("partial/7", expected_version=partial),
            Append("iterations", b"it1"),
            Append("iterations", b"it2"),
            Check("weights/version", ABSENT),
            Put("iteration/1", b"done"),
        ]
    )
    new_version = results[0]
    assert results == (new_version, partial, 1, 2, ABSENT, new_version)
    assert new_version > partial
    assert store.get("dataset/cursor") == Versioned(b"42", new_version)
    assert store.get("iteration/1") == Versioned(b"done", new_version)
    assert store.get("partial/7") is None
    assert store.read("iterations") == [b"it0", b"it1", b"it2"]


@pytest.mark.parametrize("failing", ["put", "delete", "check"])
def test_a_failed_condition_fails_the_whole_commit(store: StateStore, failing: str) -> None:
    cursor = store.put("cursor", b"1")
    partial = store.put("partial/1", b"p")
    stale = {"put": "cursor", "delete": "partial/1", "check": "guard"}[failing]
    store.put(stale, b"moved on")  # another writer got there first
    ops = [
        Append("iterations", b"it"),
        Put("cursor", b"2", expected_version=cursor),
        Delete("partial/1", expected_version=partial),
        Check("guard", ABSENT),
        Put("iteration/1", b"done"),
    ]
    before = {key: store.get(key) for key in ("cursor", "partial/1", "guard")}
    with pytest.raises(VersionConflict) as caught:
        store.commit(ops)
    assert caught.value.key == stale
    assert {key: store.get(key) for key in before} == before
    assert store.get("iteration/1") is None
    assert store.length("iterations") == 0


def test_an_empty_commit_does_nothing(store: StateStore) -> None:
    assert store.commit([]) == ()


def test_a_commit_may_not_name_a_key_twice(store: StateStore) -> None:
    with pytest.raises(ValueError, match="more than one op"):
        store.commit([Put("k", b"1"), Delete("k")])
    assert store.get("k") is None


# --- bad input ---


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda s: s.put("k", "text"), TypeError, "encode_json"),
        (lambda s: s.put("k", bytearray(b"x")), TypeError, "must be bytes"),
        (lambda s: s.put("k", None), TypeError, "must be bytes"),
        (lambda s: s.put("", b"v"), ValueError, "must not be empty"),
        (lambda s: s.put(1, b"v"), TypeError, "key must be str"),
        (lambda s: s.put("\ud800", b"v"), ValueError, "UTF-8"),
        (lambda s: s.get(""), ValueError, "must not be empty"),
        (lambda s: s.compare_and_set("k", b"v", -1), ValueError, ">= 0"),
        (lambda s: s.compare_and_set("k", b"v", None), TypeError, "must be int"),
        (lambda s: s.compare_and_set("k", b"v", True), TypeError, "must be int"),
        (lambda s: s.append("", b"v"), ValueError, "stream must not be empty"),
        (lambda s: s.append("log", 5), TypeError, "must be bytes"),
        (lambda s: s.read("log", -1), ValueError, "start must be >= 0"),
        (lambda s: s.read("log", 0, -2), ValueError, "limit must be >= 0"),
        (lambda s: s.scan(b"p"), TypeError, "prefix must be str"),
        (lambda s: s.commit([("put", "k", b"v")]), TypeError, "Put/Delete/Check/Append"),
    ],
)
def test_bad_input_is_rejected_with_a_clear_error(
    store: StateStore, call, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call(store)
    assert list(store.scan()) == [] and store.length("log") == 0


# --- namespaces, lifecycle, helpers ---


def test_namespaces_on_one_backend_are_isolated(target) -> None:
    other = type(target)(target.url, target.namespace + "-other")
    with target.open() as mine, other.open() as theirs:
        mine.put("cursor", b"mine")
        mine.append("log", b"mine")
        assert theirs.get("cursor") is None and theirs.length("log") == 0
        theirs.put("cursor", b"theirs")
        assert mine.get("cursor").value == b"mine"
        assert [key for key, _ in theirs.scan()] == ["cursor"]


def test_state_survives_reopening(target) -> None:
    with target.open() as store:
        version = store.put("k", b"v")
        store.append("log", b"e")
    with target.open() as store:
        assert store.get("k") == Versioned(b"v", version)
        assert store.read("log") == [b"e"]
        assert store.put("k", b"w") > version  # the revision counter is durable too


def test_a_closed_store_refuses_calls(target) -> None:
    with target.open() as store:
        store.put("k", b"v")
        pages = store.scan()
    store.close()  # idempotent
    for call in (lambda: store.get("k"), lambda: store.put("k", b"v"), lambda: list(pages)):
        with pytest.raises(StoreError, match="closed"):
            call()


def test_json_helpers_round_trip(store: StateStore) -> None:
    record = {"iteration": 3, "rewards": [0.5, 1.0], "done": True, "note": "\u00e9"}
    store.put("iteration/3", encode_json(record))
    assert store.get("iteration/3").json() == record
    assert encode_json({"b": 1, "a": 2}) == b'{"a":2,"b":1}'
    assert decode_json(encode_json(None)) is None
    with pytest.raises(ValueError):
        encode_json(float("nan"))
