"""A child process for the multi-process and crash tests (and the CAS loop the thread test
shares, loaded with runpy).

    store_worker.py increment URL NAMESPACE KEY TIMES   print "ready", wait for a line on stdin
                                                        (a start barrier), then add 1 to KEY
                                                        TIMES times by compare-and-set
    store_worker.py write URL NAMESPACE COUNT           commit entry i, then print i, COUNT times

``write`` prints each index only after its commit returned: the parent treats every printed
index as acknowledged, so it must be readable after this process is killed.
"""

from __future__ import annotations

import sys

from k2rl.core.store import ABSENT, Append, Put, StateStore, VersionConflict, open_store

MAX_ATTEMPTS_PER_INCREMENT = 10_000


def cas_increment(store: StateStore, key: str, times: int) -> None:
    """Add 1 to the integer at ``key`` ``times`` times, each a read + compare-and-set loop."""
    for _ in range(times):
        for _ in range(MAX_ATTEMPTS_PER_INCREMENT):
            current = store.get(key)
            count = int(current.value) if current else 0
            try:
                store.compare_and_set(
                    key, str(count + 1).encode(), current.version if current else ABSENT
                )
                break
            except VersionConflict:
                continue
        else:
            raise RuntimeError(f"no increment of {key!r} in {MAX_ATTEMPTS_PER_INCREMENT} tries")


def entry(index: int) -> bytes:
    return f"entry-{index:06d}".encode() * 16


def write_acknowledged(store: StateStore, count: int) -> None:
    for index in range(count):
        store.commit([Put(f"acked/{index:06d}", entry(index)), Append("acked", entry(index))])
        print(index, flush=True)


def main(mode: str, url: str, namespace: str, *rest: str) -> None:
    with open_store(url, namespace=namespace) as store:
        if mode == "increment":
            key, times = rest
            print("ready", flush=True)
            sys.stdin.readline()
            cas_increment(store, key, int(times))
        elif mode == "write":
            (count,) = rest
            write_acknowledged(store, int(count))
        else:
            raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
