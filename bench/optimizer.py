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

Times are medians of ``--steps`` timed rounds after ``--warmup`` untimed ones; each round steps
every variant once, so load from other processes hits all variants alike. The default is one
thread: with several threads on a busy machine, torch.optim.Muon's hundreds of small per-matrix
matmuls each wait on a thread barrier and its time explodes (``--threads 0`` shows it), which
flatters the batched MuonClip; one thread compares the work itself.

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


def _time_interleaved(
    variants: dict[str, tuple[Callable[[], None], Callable[[], None]]],
    steps: int,
    warmup: int,
    device: torch.device,
) -> dict[str, tuple[float, float]]:
    """Median (wall, process CPU) seconds per step of each ``(prepare, step)`` variant.

    Variants are timed in interleaved rounds so a noisy neighbour on a shared machine hits all
    of them alike. With one thread, CPU time (user + sys of this process) measures the work
    itself even when the machine is oversubscribed and wall time is not.
    """
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for round_ in range(warmup + steps):
        for name, (prepare, step) in variants.items():
            prepare()
            _sync(device)
            wall, cpu = time.perf_counter(), time.process_time()
            step()
            _sync(device)
            if round_ >= warmup:
                times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {
        name: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts))
        for name, ts in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="k2-micro")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: stable on a shared CPU; 0 leaves torch's default)",
    )
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
        for p, g in zip(params, grads, strict=True):
            p.grad = g

    def load_grads_and_logits() -> None:
        load_grads()
        for m, s in zip(attention, s_max, strict=True):
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

    t = _time_interleaved(
        {
            "muonclip": (load_grads_and_logits, muonclip.step),
            "torch_muon": (load_grads, torch_muon.step),
            "torch_adamw_rest": (load_grads, torch_adamw_rest.step),
            "adamw": (load_grads, adamw_all.step),
        },
        args.steps,
        args.warmup,
        device,
    )
    assert muonclip.last_qk_clip_stats is not None
    result: dict[str, object] = {
        "bench": "optimizer",
        "preset": args.preset,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(),
        "threads": torch.get_num_threads(),
        "params": sum(p.numel() for p in params),
        "muon_matrices": sum(p.shape[0] if p.ndim == 3 else 1 for p in muon_params),
        "muon_params": sum(p.numel() for p in muon_params),
        "qk_clip_heads_clipped_per_step": muonclip.last_qk_clip_stats.num_clipped,
        "steps_timed": args.steps,
    }
    for i, clock in enumerate(("s", "cpu_s")):
        muonclip_t, torch_muon_t, adamw_t = t["muonclip"][i], t["torch_muon"][i], t["adamw"][i]
        pair_t = torch_muon_t + t["torch_adamw_rest"][i]
        suffix = "" if clock == "s" else "_cpu"
        result |= {
            f"muonclip_{clock}": round(muonclip_t, 4),
            f"torch_muon_{clock}": round(torch_muon_t, 4),
            f"torch_muon_adamw_{clock}": round(pair_t, 4),
            f"adamw_{clock}": round(adamw_t, 4),
            f"ratio{suffix}": round(muonclip_t / pair_t, 3),
            f"ratio_vs_torch_muon_only{suffix}": round(muonclip_t / torch_muon_t, 3),
            f"ratio_vs_adamw{suffix}": round(muonclip_t / adamw_t, 3),
        }
    result["target_ratio"] = 1.15
    result["meets_target"] = result["ratio"] <= 1.15
    if device.type == "cpu" and torch.get_num_threads() == 1:
        result["meets_target_cpu_time"] = result["ratio_cpu"] <= 1.15
    print(json.dumps(result))


if __name__ == "__main__":
    main()
