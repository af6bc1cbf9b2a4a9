"""Checkpoint engine update bandwidth on CPU vs a plain memcpy of the same bytes, same run.

Prints one JSON line. A local deployment (k2rl.checkpoint_engine.local): coordinator, a
2-rank trainer (this process), ``--workers`` engine worker processes broadcasting over gloo,
and ``--replicas`` reference replicas each taking the full parameter set from the workers'
shared-memory IPC slots with checksum verification. Timed: PublishVersion -> every replica
APPLIED (WaitForVersion COMPLETE), the trainer's packing (staging) reported apart. The first
``--warmup`` updates are not timed (steady state of an RL loop: every shared buffer exists and
the replica's standby parameter set has been written once); the very first one is reported
as ``cold_update_s``.

* ``update_gbps``: total bytes / update wall time (median); ``memcpy_gbps``: torch copy of
  the same total bytes between two preallocated host buffers, timed right before each
  timed update (median); ``ratio``: median over the timed updates of memcpy time / update
  time, each pair measured back to back so that both see the same load on a shared box
  (target 0.5).
* ``phases_s``: per-phase seconds summed over workers and timed updates, from the
  coordinator's metrics (gather = the H2D stage, broadcast, reload_wait = waiting for
  replica acks, commit).

    python bench/weight_update.py                       # ~256 MB, two-stage
    python bench/weight_update.py --pipeline three_stage --mbytes 512
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from k2rl.checkpoint_engine.local import cluster
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.weights import ChecksumAlgorithm


def parameters(total_mbytes: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Two ranks' bf16 matrices of 4 MiB each (HF-like names), ``total_mbytes`` in all."""
    g = torch.Generator().manual_seed(seed)
    count = max(2, total_mbytes // 4)
    ranks: list[dict[str, torch.Tensor]] = [{}, {}]
    for i in range(count):
        ranks[i % 2][f"model.layers.{i // 4}.mlp.experts.{i % 4}.weight"] = torch.randn(
            1024, 2048, generator=g
        ).to(torch.bfloat16)
    return ranks


class Memcpy:
    """The baseline: one copy of ``total_bytes`` between two preallocated, touched host buffers."""

    def __init__(self, total_bytes: int) -> None:
        self.src = torch.randint(0, 255, (total_bytes,), dtype=torch.uint8)
        self.dst = torch.empty_like(self.src)
        self.dst.copy_(self.src)

    def seconds(self) -> float:
        start = time.perf_counter()
        self.dst.copy_(self.src)
        return time.perf_counter() - start


def phase_sums(metrics_url: str) -> dict[str, float]:
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    pattern = re.compile(r'^k2rl_checkpoint_engine_phase_seconds_sum\{phase="(\w+)"\} (\S+)$', re.M)
    return {phase: float(value) for phase, value in pattern.findall(text)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mbytes", type=int, default=256)
    parser.add_argument("--bucket-mbytes", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--updates", type=int, default=5, help="timed updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first (at least 1)")
    parser.add_argument("--pipeline", choices=["two_stage", "three_stage"], default="two_stage")
    parser.add_argument("--data-path", choices=["auto", "shared_slots", "broadcast"], default="auto",
                        help="auto = shared IPC slots (all workers are on this node)")
    parser.add_argument("--checksum", choices=[a.value for a in ChecksumAlgorithm], default="xxh3_64",
                        help="per-bucket checksum the trainer publishes (verified at gather and by every replica)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with (
        tempfile.TemporaryDirectory() as tmp,
        cluster(
            Path(tmp),
            workers=args.workers,
            bucket_bytes=args.bucket_mbytes << 20,
            pipeline=args.pipeline,
            data_path=args.data_path,
            checksum=ChecksumAlgorithm(args.checksum),
            collective_timeout_s=120,
            lease_ttl_ms=60_000,
        ) as deployment,
    ):
        for i in range(args.replicas):
            deployment.start_replica(f"r{i}", dump=False)
        update_times, stage_times, memcpy_times = [], [], []
        warmup = max(1, args.warmup)
        total = sum(t.numel() * t.element_size() for rank in parameters(args.mbytes, 0) for t in rank.values())
        memcpy = Memcpy(total)
        for step in range(1, warmup + args.updates + 1):
            if step == warmup + 1:
                phases_before = phase_sums(deployment.metrics_url)
            params = parameters(args.mbytes, step)
            start = time.perf_counter()
            staged = [stager.stage(tensors) for stager, tensors in zip(deployment.stagers, params, strict=True)]
            stage_times.append(time.perf_counter() - start)  # the trainer's packing, not engine time
            deployment.renew_trainers()  # a trainer heartbeats on its own timer, not per update
            memcpy_times.append(memcpy.seconds())
            start = time.perf_counter()
            final = deployment.wait(deployment.publish_staged(staged, step), timeout=600)
            update_times.append(time.perf_counter() - start)
            if final.phase != ce.VERSION_PHASE_COMPLETE:
                raise SystemExit(f"update {step} did not complete: {final}")
        phases = {
            k: round(v - phases_before.get(k, 0.0), 4)
            for k, v in phase_sums(deployment.metrics_url).items()
        }
    timed = update_times[warmup:]
    update = total / statistics.median(timed) / 1e9
    baseline = total / statistics.median(memcpy_times[warmup:]) / 1e9
    ratios = [m / u for m, u in zip(memcpy_times[warmup:], timed, strict=True)]
    print(
        json.dumps(
            {
                "bench": "weight_update",
                "device": "cpu",
                "pipeline": args.pipeline,
                "data_path": args.data_path,
                "checksum": args.checksum,
                "workers": args.workers,
                "replicas": args.replicas,
                "bytes": total,
                "bucket_bytes": args.bucket_mbytes << 20,
                "updates": args.updates,
                "warmup": warmup,
                "cold_update_s": round(update_times[0], 4),
                "update_s_median": round(statistics.median(timed), 4),
                "update_s_range": [round(min(timed), 4), round(max(timed), 4)],
                "update_gbps": round(update, 3),
                "memcpy_gbps": round(baseline, 3),
                "ratio": round(statistics.median(ratios), 3),
                "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
                "target_ratio": 0.5,
                "trainer_stage_s_median": round(statistics.median(stage_times[warmup:]), 4),
                "phases_s_total_over_workers": phases,
            }
        )
    )


if __name__ == "__main__":
    main()
