"""Attention-logit explosion under Muon, and MuonClip keeping it at tau (K2 §2.1, Figure 2).

Trains k2-nano (MLA + MoE) twice from the same initialisation on the same synthetic batches --
once with vanilla Muon (``qk_clip_tau=None``: S_max measured, nothing clipped) and once with
MuonClip (tau = 100, K2's value) -- at a deliberately high learning rate and no weight decay, the
small-scale stand-in for the long training runs where K2 saw max logits pass 1000. The data are
periodic byte sequences (a random block of ``--period`` tokens repeated), which reward sharp
attention: the max pre-softmax logit S_max (max over layers and heads, per step) is what grows.

Writes ``bench/out/logit_explosion.csv`` (step, optimizer, max_logit, loss, clipped_heads) and
``bench/out/logit_explosion.png``, and prints one JSON line. The default is 200 steps per optimizer:
400 training steps of ~0.4 s each on one thread (the default; on a loaded 2-core box one thread
ran 2.7x faster than two), about 2 minutes. Vanilla Muon crosses tau near step 95 and keeps
growing (``--steps 300`` for a longer curve). For a fixed thread count runs are deterministic: a
longer run repeats a shorter one's steps exactly and continues.

    python bench/logit_explosion.py
    python bench/logit_explosion.py --steps 300 --out-dir /tmp/explosion
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from k2rl.models.deepseek_v3 import DeepseekV3ForCausalLM
from k2rl.models.presets import get_preset
from k2rl.optim import MuonClip

OUT_DIR = Path(__file__).resolve().parent / "out"


def _batches(steps: int, batch: int, seq_len: int, period: int, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        block = torch.randint(0, 256, (batch, period), generator=gen)
        out.append(block.repeat(1, seq_len // period + 2)[:, : seq_len + 1])
    return out


def _train(args: argparse.Namespace, tau: float | None, batches: list[torch.Tensor]) -> list[dict]:
    torch.manual_seed(args.seed)
    model = DeepseekV3ForCausalLM(get_preset(args.preset))
    opt = MuonClip.from_model(model, lr=args.lr, weight_decay=args.weight_decay, qk_clip_tau=tau)
    name = "muon" if tau is None else "muonclip"
    rows = []
    for step, ids in enumerate(batches):
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        stats = opt.last_qk_clip_stats
        assert stats is not None and stats.max_logit is not None
        rows.append(
            {
                "step": step,
                "optimizer": name,
                "max_logit": round(stats.max_logit, 4),
                "loss": round(float(loss.detach()), 4),
                "clipped_heads": stats.num_clipped,
            }
        )
    return rows


def _plot(rows: list[dict], tau: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_logit, ax_loss) = plt.subplots(1, 2, figsize=(11, 4))
    for name, colour in [("muon", "tab:red"), ("muonclip", "tab:blue")]:
        steps = [r["step"] for r in rows if r["optimizer"] == name]
        label = "Muon" if name == "muon" else f"MuonClip (tau={tau:g})"
        ax_logit.plot(
            steps,
            [r["max_logit"] for r in rows if r["optimizer"] == name],
            color=colour,
            label=label,
        )
        ax_loss.plot(
            steps, [r["loss"] for r in rows if r["optimizer"] == name], color=colour, label=label
        )
    ax_logit.axhline(tau, color="grey", linestyle="--", linewidth=1)
    ax_logit.set(xlabel="step", ylabel="max attention logit S_max", title="Max logits")
    ax_loss.set(xlabel="step", ylabel="training loss", title="Loss")
    ax_logit.legend()
    ax_loss.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="k2-nano")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--weight-decay", type=float, default=0.0)
    parser.add_argument("--tau", type=float, default=100.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--period", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: small matmuls gain little from more, and on a busy "
        "machine extra threads spin at barriers; 0 leaves torch's default)",
    )
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    batches = _batches(args.steps, args.batch, args.seq_len, args.period, args.seed + 1)
    muon = _train(args, None, batches)
    clip = _train(args, args.tau, batches)
    rows = muon + clip

    args.out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = args.out_dir / "logit_explosion.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png_path: Path | None = args.out_dir / "logit_explosion.png"
    png_error = None
    try:
        _plot(rows, args.tau, png_path)
    except ImportError as err:  # matplotlib is a bench-only dependency
        png_path, png_error = None, f"matplotlib unavailable: {err}"

    def peak(series: list[dict]) -> float:
        return max(r["max_logit"] for r in series)

    tail = max(1, args.steps // 10)
    summary = {
        "bench": "logit_explosion",
        "preset": args.preset,
        "steps": args.steps,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "tau": args.tau,
        "muon_max_logit_peak": peak(muon),
        "muon_max_logit_final": muon[-1]["max_logit"],
        "muonclip_max_logit_peak": peak(clip),
        "muonclip_max_logit_final": clip[-1]["max_logit"],
        "muon_first_step_above_tau": next(
            (r["step"] for r in muon if r["max_logit"] > args.tau), None
        ),
        "muonclip_steps_with_clipping": sum(r["clipped_heads"] > 0 for r in clip),
        "muon_loss_final_mean": round(sum(r["loss"] for r in muon[-tail:]) / tail, 4),
        "muonclip_loss_final_mean": round(sum(r["loss"] for r in clip[-tail:]) / tail, 4),
        "csv": str(csv_path),
        "png": None if png_path is None else str(png_path),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    if png_error:
        summary["png_error"] = png_error
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
