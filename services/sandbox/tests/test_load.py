"""Bounded loopback load: N clients x M requests of a trivial program, nothing lost."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from k2rl.sandbox.pool import percentile
from k2rl.sandbox.v1 import sandbox_pb2 as pb

CLIENTS, REQUESTS_EACH = 8, 10


def test_every_request_of_concurrent_clients_is_answered(sandbox) -> None:
    def client(index: int) -> list[tuple[bytes, float]]:
        answers = []
        for request in range(REQUESTS_EACH):
            started = time.perf_counter()
            result = sandbox.execute(f"print({index}, {request})")
            answers.append((result.run.stdout, (time.perf_counter() - started) * 1000))
        return answers

    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as clients:
        per_client = list(clients.map(client, range(CLIENTS)))
    elapsed = time.perf_counter() - started
    for index, answers in enumerate(per_client):
        assert [out for out, _ in answers] == [f"{index} {r}\n".encode() for r in range(REQUESTS_EACH)]
    latencies = [ms for answers in per_client for _, ms in answers]
    print(f"load: {CLIENTS}x{REQUESTS_EACH} in {elapsed:.2f}s = {len(latencies) / elapsed:.1f} exec/s, "
          f"p50 {percentile(latencies, 50):.0f} ms, p99 {percentile(latencies, 99):.0f} ms")
    stats = sandbox.stub.GetPoolStats(pb.GetPoolStatsRequest(), timeout=10)
    assert stats.queued == 0 and stats.executors_busy == 0
