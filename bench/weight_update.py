"""Checkpoint engine update bandwidth on CPU vs a plain memcpy of the same bytes, same run.

Prints one JSON line. A local deployment (k2rl.checkpoint_engine.local): coordinator, a
2-rank trainer (this process), ``--workers`` engine worker processes broadcasting over gloo,
and ``--replicas`` reference replicas each taking the full parameter set from the workers'
shared-memory IPC slots with checksum verification. Timed: PublishVersion -> every replica
APPLIED (WaitForVersion COMPLETE), the trainer's packing (staging) reported apart.

* ``update_gbps``: total bytes / update wall time; ``memcpy_gbps``: torch copy of the same
  total bytes between two preallocated host buffers; ``ratio`` = update / memcpy (target 0.5).
* ``phases_s``: per-phase seconds summed over workers, from the coordinator's metrics
  (gather = the H2D stage, broadcast, reload_wait = waiting for replica acks, commit).

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


def memcpy_gbps(total_bytes: int, repeats: int) -> float:
    src = torch.randint(0, 255, (total_bytes,), dtype=torch.uint8)
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return total_bytes / statistics.median(times) / 1e9


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
    parser.add_argument("--updates", type=int, default=3)
    parser.add_argument("--pipeline", choices=["two_stage", "three_stage"], default="two_stage")
    parser.add_argument("--data-path", choices=["auto", "shared_slots", "broadcast"], default="auto",
                        help="auto = shared IPC slots (all workers are on this node)")
    parser.add_argument("--checksum", choices=[a.value for a in ChecksumAlgorithm], default="crc32",
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
        update_times, stage_times = [], []
        total = 0
        phases_before = phase_sums(deployment.metrics_url)
        for step in range(1, args.updates + 1):
            params = parameters(args.mbytes, step)
            start = time.perf_counter()
            for stager, tensors in zip(deployment.stagers, params, strict=True):
                stager.stage(tensors)
            staged = time.perf_counter()
            version = deployment.publish(params, step)
            final = deployment.wait(version, timeout=600)
            done = time.perf_counter()
            if final.phase != ce.VERSION_PHASE_COMPLETE:
                raise SystemExit(f"update {step} did not complete: {final}")
            # publish() stages again; count its packing as trainer time, not engine time.
            update_times.append((done - staged) - (staged - start))
            stage_times.append(staged - start)
            total = sum(t.numel() * t.element_size() for rank in params for t in rank.values())
        phases = {
            k: round(v - phases_before.get(k, 0.0), 4)
            for k, v in phase_sums(deployment.metrics_url).items()
        }
    update = total / statistics.median(update_times) / 1e9
    baseline = memcpy_gbps(total, 5)
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
                "update_s_median": round(statistics.median(update_times), 4),
                "update_gbps": round(update, 3),
                "memcpy_gbps": round(baseline, 3),
                "ratio": round(update / baseline, 3),
                "target_ratio": 0.5,
                "trainer_stage_s_median": round(statistics.median(stage_times), 4),
                "phases_s_total_over_workers": phases,
            }
        )
    )


if __name__ == "__main__":
    main()
