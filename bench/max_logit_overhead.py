"""Cost of tracking the per-head max logit (K2 §2.1 S_max^h) on k2-nano.

Prints one JSON line. Without tracking, attention runs through SDPA; with tracking it runs
from the materialised logits and takes their per-head max in the same pass (no second
QK^T). Timings are medians over interleaved repetitions of the same batch:

* ``ratio_forward``: forward with tracking / forward without (the headline figure);
* ``ratio_train_step``: forward + backward, same comparison;
* ``ratio_forward_eager_untracked``: the eager path with the max reduction stubbed out /
  without tracking, which splits the overhead into "eager instead of SDPA" and "the max";
* on CUDA only, ``ratio_forward_flex`` / ``ratio_train_step_flex``: tracking through the
  compiled flex_attention kernel (the ``auto`` choice on CUDA), which returns row maxima
  without materialising the logits, / without tracking. "tracked" above stays eager.

    python bench/max_logit_overhead.py
    python bench/max_logit_overhead.py --batch 8 --seq 1024 --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from k2rl.models import attention, load_model


def _timed(fn: Callable[[], None], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preset", default="k2-nano")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--device", default="cpu")
    # One thread: the ratio compares two code paths, and on a shared box a 2-thread pool
    # under contention adds more noise than signal. Pass --threads 2 for the 2-core figure.
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    model = load_model(args.preset, device=args.device)
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=args.device)

    def forward() -> None:
        with torch.no_grad():
            model(ids)

    def train_step() -> None:
        model.zero_grad(set_to_none=True)
        model.token_logprobs(ids[:, :-1], ids[:, 1:]).mean().backward()

    def configure(mode: str) -> None:
        model.set_track_max_logits(mode != "untracked")
        model.set_attention_backend({"untracked": "auto", "flex": "flex"}.get(mode, "eager"))
        model.reset_max_logits()
        attention.masked_head_max = stub if mode == "eager_no_max" else real_head_max

    real_head_max = attention.masked_head_max

    def stub(logits: torch.Tensor, mask: attention.AttentionMask) -> torch.Tensor:
        return torch.zeros(logits.shape[1], device=logits.device)

    modes: tuple[str, ...] = ("untracked", "tracked", "eager_no_max")
    if args.device == "cuda":
        modes += ("flex",)
    samples: dict[tuple[str, str], list[float]] = {
        (m, k): [] for m in modes for k in ("forward", "train")
    }
    for mode in modes:  # warm-up
        configure(mode)
        forward()
        train_step()
    for _ in range(args.reps):
        for mode in modes:
            configure(mode)
            samples[(mode, "forward")].append(_timed(forward, args.device))
            samples[(mode, "train")].append(_timed(train_step, args.device))
    configure("untracked")

    med = {key: statistics.median(values) for key, values in samples.items()}

    def ratio(mode: str, kind: str) -> float:
        return round(med[(mode, kind)] / med[("untracked", kind)], 4)

    flex = {}
    if "flex" in modes:
        flex = {
            "ratio_forward_flex": ratio("flex", "forward"),
            "ratio_train_step_flex": ratio("flex", "train"),
        }
    print(
        json.dumps(
            {
                "bench": "max_logit_overhead",
                "preset": args.preset,
                "device": args.device,
                "threads": args.threads,
                "batch": args.batch,
                "seq": args.seq,
                "forward_untracked_s": round(med[("untracked", "forward")], 5),
                "forward_tracked_s": round(med[("tracked", "forward")], 5),
                "ratio_forward": ratio("tracked", "forward"),
                "ratio_train_step": ratio("tracked", "train"),
                "ratio_forward_eager_untracked": ratio("eager_no_max", "forward"),
                **flex,
            }
        )
    )


if __name__ == "__main__":
    main()
