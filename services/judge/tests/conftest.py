"""Shared fixtures: one math worker pool for the whole session (workers cost ~1 s to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k2rl.judge.procpool import KillingProcessPool


@pytest.fixture(scope="session")
def math_pool() -> Iterator[KillingProcessPool]:
    pool = KillingProcessPool(2, preload=("k2rl.judge.verifiers.math_worker",))
    pool.warm_up()
    yield pool
    pool.close()
