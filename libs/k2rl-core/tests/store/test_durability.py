"""Concurrency and crash safety, on SQLite and on a real redis-server: no lost update between
threads or processes, and no acknowledged write lost to a SIGKILL of the writer (and, for
Redis, of the server too)."""

from __future__ import annotations

import runpy
import threading
import time
from pathlib import Path

from k2rl.core.store import StateStore

WORKER = runpy.run_path(str(Path(__file__).with_name("store_worker.py")))
cas_increment = WORKER["cas_increment"]
entry = WORKER["entry"]

THREADS, INCREMENTS_PER_THREAD = 4, 40
PROCESSES, INCREMENTS_PER_PROCESS = 2, 100
ACKS_BEFORE_KILL = 40
DEADLINE_S = 30.0


def test_threads_doing_cas_increments_lose_no_update(store: StateStore) -> None:
    errors: list[BaseException] = []

    def increment() -> None:
        try:
            cas_increment(store, "counter", INCREMENTS_PER_THREAD)
        except BaseException as exc:  # reported by the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=increment) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=DEADLINE_S)
    assert not any(thread.is_alive() for thread in threads), "increments did not finish"
    assert not errors, errors
    assert int(store.get("counter").value) == THREADS * INCREMENTS_PER_THREAD


def test_processes_doing_cas_increments_lose_no_update(target, spawn_worker) -> None:
    children = [
        spawn_worker("increment", target.url, target.namespace, "counter",
                     str(INCREMENTS_PER_PROCESS))
        for _ in range(PROCESSES)
    ]  # fmt: skip
    for child in children:  # all open the store before any starts incrementing
        assert child.stdout.readline() == "ready\n"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()
    assert [child.wait(timeout=DEADLINE_S) for child in children] == [0] * PROCESSES
    with target.open() as store:
        assert int(store.get("counter").value) == PROCESSES * INCREMENTS_PER_PROCESS


def test_acknowledged_commits_survive_sigkill(durable_target, spawn_worker) -> None:
    """The writer prints an index only after its commit returned; SIGKILL it mid-stream
    (and, for Redis, the server too) and every printed index must still be there."""
    child = spawn_worker("write", durable_target.url, durable_target.namespace, "100000")
    assert child.stdout is not None
    acked: list[int] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline:
        line = child.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    assert len(acked) == ACKS_BEFORE_KILL, f"writer stopped after {len(acked)} commits"
    child.kill()
    child.wait(timeout=10)
    # Lines already in the pipe were acknowledged too; a torn last line was not.
    acked += [int(line) for line in child.stdout.read().splitlines(keepends=True)
              if line.endswith("\n")]  # fmt: skip
    if durable_target.redis_server is not None:
        durable_target.redis_server.kill()
        durable_target.redis_server.start()

    with durable_target.open() as store:
        for index in acked:
            assert store.get(f"acked/{index:06d}").value == entry(index)
        written = [key for key, _ in store.scan("acked/")]
        # The commit in flight at the kill is all-or-nothing: keys and stream agree.
        assert written == [f"acked/{index:06d}" for index in range(len(written))]
        assert store.read("acked") == [entry(index) for index in range(len(written))]
        assert len(written) >= len(acked) == acked[-1] + 1
