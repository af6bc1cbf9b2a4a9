"""MuonClip step time vs torch.optim.Muon and AdamW on the same k2-micro parameters.

Prints one JSON line. Gradients are random (seeded) and every attention module gets a synthetic
per-head S_max with a quarter of the heads above tau, so the timed MuonClip step includes
QK-Clip. Baselines over the same parameters:

* ``torch_muon``: ``torch.optim.Muon`` (``adjust_lr_fn="match_rms_adamw"``, the K2 scaling) on the
  Muon-role matrices only -- what torch.optim.Muon can take;
* ``torch_muon_adamw``: that plus ``torch.optim.AdamW`` (foreach) on the remaining parameters
  (embeddings, lm_head, norms; timed separately and added) -- the same work as one MuonClip step
  minus QK-Clip; ``ratio`` (the 1.15x target) is against it;
* ``adamw``: ``torch.optim.AdamW`` (foreach) on every parameter.

Times are medians of ``--steps`` timed steps after ``--warmup`` untimed ones. On a shared CPU,
run with ``--threads 1`` for stable numbers (oversubscribed threads make small matmuls erratic).

    python bench/optimizer.py                     # k2-micro, CPU
    python bench/optimizer.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from k2rl.models.deepseek_v3 import DeepseekV3ForCausalLM
from k2rl.models.presets import get_preset
from k2rl.optim import MuonClip, param_groups_for_model

TAU = 100.0


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _time(step: Callable[[], None], before: Callable[[], None], steps: int, warmup: int,
          device: torch.device) -> float:
    times = []
    for i in range(warmup + steps):
        before()
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="k2-micro")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: leave as is)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = DeepseekV3ForCausalLM(get_preset(args.preset)).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator(device="cpu").manual_seed(1)
    grads = [torch.randn(p.shape, generator=gen).mul_(1e-3).to(device) for p in params]
    attention = [m for _, m in model.attention_modules()]
    s_max = [
        torch.linspace(TAU / 2, TAU * 1.5, m.num_heads, device=device).float() for m in attention
    ]

    def load_grads() -> None:
        for p, g in zip(params, grads):
            p.grad = g

    def load_grads_and_logits() -> None:
        load_grads()
        for m, s in zip(attention, s_max):
            m.max_logits = s.clone()

    groups = param_groups_for_model(model)
    muon_params = next(g["params"] for g in groups if g["role"] == "muon")
    other_params = next(g["params"] for g in groups if g["role"] == "adamw")
    muonclip = MuonClip.from_model(model, lr=2e-4, weight_decay=0.1, qk_clip_tau=TAU)
    torch_muon = torch.optim.Muon(
        muon_params, lr=2e-4, weight_decay=0.1, adjust_lr_fn="match_rms_adamw"
    )
    torch_adamw_rest = torch.optim.AdamW(other_params, lr=2e-4, weight_decay=0.1, foreach=True)
    adamw_all = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.1, foreach=True)

    n, w = args.steps, args.warmup
    t_muonclip = _time(muonclip.step, load_grads_and_logits, n, w, device)
    assert muonclip.last_qk_clip_stats is not None
    clipped = muonclip.last_qk_clip_stats.num_clipped
    t_torch_muon = _time(torch_muon.step, load_grads, n, w, device)
    t_adamw_rest = _time(torch_adamw_rest.step, load_grads, n, w, device)
    t_pair = t_torch_muon + t_adamw_rest
    t_adamw = _time(adamw_all.step, load_grads, n, w, device)
    print(
        json.dumps(
            {
                "bench": "optimizer",
                "preset": args.preset,
                "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
                "threads": torch.get_num_threads(),
                "params": sum(p.numel() for p in params),
                "muon_matrices": sum(p.shape[0] if p.ndim == 3 else 1 for p in muon_params),
                "muon_params": sum(p.numel() for p in muon_params),
                "qk_clip_heads_clipped_per_step": clipped,
                "steps_timed": n,
                "muonclip_s": round(t_muonclip, 5),
                "torch_muon_s": round(t_torch_muon, 5),
                "torch_muon_adamw_s": round(t_pair, 5),
                "adamw_s": round(t_adamw, 5),
                "ratio": round(t_muonclip / t_pair, 3),
                "ratio_vs_torch_muon_only": round(t_muonclip / t_torch_muon, 3),
                "ratio_vs_adamw": round(t_muonclip / t_adamw, 3),
                "target_ratio": 1.15,
                "meets_target": t_muonclip / t_pair <= 1.15,
            }
        )
    )


if __name__ == "__main__":
    main()
