"""Trainer throughput: tokens/s of full training steps, k2-nano and k2-micro, 1 vs 2 ranks.

Prints one JSON line. Each configuration starts a real trainer job (``launch.start_job``:
rank 0 here, rank 1 as a child process over gloo / NCCL), runs ``--warmup`` untimed steps,
then ``--steps`` timed pretraining steps of a fixed global batch (``--batch`` random
sequences of ``--seq-len`` tokens; the same global batch for 1 and 2 ranks, so the
2-rank figure is data-parallel speed-up, not a larger batch). Reported per configuration:
median tokens/s over the timed steps (forward + backward + all-reduce + MuonClip step),
the median step time, and MFU when the device's peak FLOP/s is known (GPUs; 0 on CPU).

On a shared 2-core CPU box two ranks compete with each other for the cores, so the 2-rank
figure measures overhead rather than speed-up; on a multi-GPU node it is the DP scaling.

    python bench/trainer.py                                   # CPU, k2-nano and k2-micro
    python bench/trainer.py --device cuda --presets k2-micro --batch 32 --seq-len 1024
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.launch import JobSpec, start_job
from k2rl.trainer.testing import random_sequences


def measure(preset: str, nproc: int, args: argparse.Namespace) -> dict[str, float]:
    training = TrainingConfig(lr=1e-3, micro_batch_tokens=args.micro_batch_tokens)
    local = start_job(JobSpec(model=preset, training=training, device=args.device, nproc=nproc))
    try:
        batch = random_sequences(args.batch, args.seq_len, vary=False)
        for _ in range(args.warmup):
            local.job.train_lm(batch)
        steps = [local.job.train_lm(batch) for _ in range(args.steps)]
    finally:
        local.close()
    step_s = statistics.median(m.step_time_s for m in steps)
    return {
        "tokens_per_s": round(args.batch * args.seq_len / step_s, 1),
        "step_ms": round(step_s * 1e3, 1),
        "mfu": round(statistics.median(m.mfu for m in steps), 4),
        "final_loss": round(steps[-1].lm_loss, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", default="k2-nano,k2-micro")
    parser.add_argument("--ranks", default="1,2")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--micro-batch-tokens", type=int, default=512)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    if args.device == "cuda" and torch.cuda.device_count() < max(
        int(r) for r in args.ranks.split(",")
    ):
        parser.error(
            f"--ranks {args.ranks} needs that many GPUs; {torch.cuda.device_count()} visible"
        )
    results: dict[str, object] = {
        "bench": "trainer",
        "device": args.device
        if args.device != "auto"
        else ("cuda" if torch.cuda.is_available() else "cpu"),
        "device_name": torch.cuda.get_device_name()
        if torch.cuda.is_available() and args.device != "cpu"
        else "cpu",
        "batch_tokens": args.batch * args.seq_len,
        "torch_threads": torch.get_num_threads(),
    }
    for preset in args.presets.split(","):
        per_rank = {f"ranks_{n}": measure(preset, int(n), args) for n in args.ranks.split(",")}
        if "ranks_1" in per_rank and "ranks_2" in per_rank:
            per_rank["speedup_2_vs_1"] = round(
                per_rank["ranks_2"]["tokens_per_s"] / per_rank["ranks_1"]["tokens_per_s"], 3
            )
        results[preset] = per_rank
    print(json.dumps(results))


if __name__ == "__main__":
    main()
