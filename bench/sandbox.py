"""Sandbox throughput: isolated executions/s vs bare ``python3 -c`` subprocesses, same run.

Both sides run the same trivial program with the same concurrency. The isolated side goes
through the whole domain path (pool, working directory, bubblewrap, launcher, limits) but not
gRPC, so the figure is the cost of isolation. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from k2rl.core.metrics import ServiceMetrics
from k2rl.core.server import ServiceContext
from k2rl.sandbox.isolation import SANDBOX_PATH
from k2rl.sandbox.model import ExecutionRequest, Language, Status
from k2rl.sandbox.pool import percentile
from k2rl.sandbox.service import build_pool
from k2rl.sandbox.settings import SandboxSettings

PROGRAM = "print(sum(range(100)))"


def _measure(call, total: int, concurrency: int) -> tuple[float, list[float]]:
    def timed(_: int) -> float:
        started = time.perf_counter()
        call()
        return (time.perf_counter() - started) * 1000

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as workers:
        latencies = list(workers.map(timed, range(total)))
    return total / (time.perf_counter() - started), latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    work_root = Path(tempfile.mkdtemp(prefix="k2rl-sandbox-bench-"))
    settings = SandboxSettings(service="sandbox", concurrency=args.concurrency, work_root=work_root)
    context = ServiceContext(settings, ServiceMetrics("sandbox"), None)  # type: ignore[arg-type]
    pool, isolation = build_pool(settings, context)
    # The interpreter the sandbox runs (resolved on its PATH), not a host shim in front of it.
    python = shutil.which(settings.python_command, path=SANDBOX_PATH) or settings.python_command

    def bare() -> None:
        subprocess.run([python, "-c", PROGRAM], capture_output=True, check=True)

    def isolated() -> None:
        result = pool.execute(ExecutionRequest(Language.PYTHON, PROGRAM))
        if result.status is not Status.OK:
            raise RuntimeError(f"isolated run failed: {result}")

    try:
        _measure(isolated, 10, args.concurrency)  # warm caches on both paths
        _measure(bare, 10, args.concurrency)
        bare_rate, bare_latencies = _measure(bare, args.requests, args.concurrency)
        isolated_rate, isolated_latencies = _measure(isolated, args.requests, args.concurrency)
    finally:
        pool.close()
        pool.sessions.shutdown()
        shutil.rmtree(work_root, ignore_errors=True)
    print(
        json.dumps(
            {
                "bench": "sandbox",
                "requests": args.requests,
                "concurrency": args.concurrency,
                "isolation": isolation.features,
                "bare_exec_per_s": round(bare_rate, 1),
                "isolated_exec_per_s": round(isolated_rate, 1),
                "ratio": round(isolated_rate / bare_rate, 3),
                "target_ratio": 0.5,
                "isolated_p50_ms": round(percentile(isolated_latencies, 50), 1),
                "isolated_p99_ms": round(percentile(isolated_latencies, 99), 1),
                "bare_p50_ms": round(percentile(bare_latencies, 50), 1),
                "bare_p99_ms": round(percentile(bare_latencies, 99), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
