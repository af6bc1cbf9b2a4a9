"""The killing process pool: hard timeouts, worker replacement, bounded concurrency."""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from k2rl.judge.procpool import (
    KillingProcessPool,
    PoolBusy,
    PoolClosed,
    WorkerCrashed,
    WorkerTimeout,
)


def test_a_call_past_its_timeout_is_killed_and_the_pool_keeps_serving() -> None:
    pool = KillingProcessPool(1)
    try:
        first_pid = pool.call(os.getpid, (), timeout_s=30)
        started = time.monotonic()
        with pytest.raises(WorkerTimeout):
            pool.call(time.sleep, (60,), timeout_s=0.5)
        assert time.monotonic() - started < 5
        assert pool.kills == 1
        second_pid = pool.call(os.getpid, (), timeout_s=30)
        assert second_pid != first_pid  # the stuck worker was replaced
        with pytest.raises(ProcessLookupError):
            os.kill(first_pid, 0)
    finally:
        pool.close()


def test_exceptions_in_the_worker_are_reported_and_the_worker_survives() -> None:
    pool = KillingProcessPool(1)
    try:
        pid = pool.call(os.getpid, (), timeout_s=30)
        with pytest.raises(WorkerCrashed, match="ZeroDivisionError|TypeError"):
            pool.call(divmod, (1, 0), timeout_s=30)
        assert pool.call(os.getpid, (), timeout_s=30) == pid
    finally:
        pool.close()


def test_a_worker_that_dies_mid_call_is_a_crash_not_a_hang() -> None:
    pool = KillingProcessPool(1)
    try:
        with pytest.raises(WorkerCrashed):
            pool.call(os._exit, (3,), timeout_s=30)
        assert pool.call(divmod, (7, 2), timeout_s=30) == (3, 1)
    finally:
        pool.close()


def test_at_most_size_calls_run_at_once_and_queueing_is_bounded_separately() -> None:
    pool = KillingProcessPool(2)
    try:
        pool.warm_up()
        with ThreadPoolExecutor(4) as threads:
            slow = [threads.submit(pool.call, time.sleep, (1.0,), 10) for _ in range(2)]
            time.sleep(0.2)
            with pytest.raises(PoolBusy):
                pool.call(os.getpid, (), timeout_s=5, queue_timeout_s=0.3)
            # Queued behind the sleepers, a call with a short own timeout still runs.
            assert pool.call(os.getpid, (), timeout_s=0.5, queue_timeout_s=10) > 0
            for future in slow:
                future.result()
    finally:
        pool.close()


def test_closed_pool_refuses_calls() -> None:
    pool = KillingProcessPool(1)
    pool.close()
    with pytest.raises(PoolClosed):
        pool.call(os.getpid, (), timeout_s=1)


def test_a_worker_that_cannot_start_is_a_crash_and_the_slot_is_kept() -> None:
    pool = KillingProcessPool(1, preload=("k2rl.judge.no_such_module",), startup_timeout_s=30)
    try:
        for _ in range(2):  # the slot is reusable after a failed start
            with pytest.raises(WorkerCrashed, match="did not start"):
                pool.call(os.getpid, (), timeout_s=5, queue_timeout_s=1)
    finally:
        pool.close()
