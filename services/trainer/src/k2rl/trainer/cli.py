"""``k2rl train ...``: training jobs run from the command line (no gRPC)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from k2rl.trainer.pretrain import PretrainOptions, pretrain
from k2rl.trainer.sft import SFTOptions, sft

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Run trainer jobs (pretraining, SFT).")
console = Console(stderr=True)


@app.command("pretrain")
def pretrain_command(
    data: Annotated[Path, typer.Option(help=".txt (blank-line separated documents) or .jsonl ({'text': ...})")],
    preset: Annotated[str, typer.Option(help="model preset or HF checkpoint directory")] = "k2-nano",
    out: Annotated[Path, typer.Option(help="metrics.jsonl and checkpoints/ go here; rerun to resume")] = Path(
        ".k2rl/pretrain"),
    steps: Annotated[int, typer.Option(min=1)] = 100,
    warmup_steps: Annotated[int, typer.Option(min=0)] = 10,
    decay_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="WSD decay share of the steps")] = 0.2,
    batch_size: Annotated[int, typer.Option(min=1, help="sequences per step (global)")] = 8,
    seq_len: Annotated[int, typer.Option(min=2)] = 128,
    lr: Annotated[float, typer.Option(min=0.0)] = 3e-3,
    eval_every: Annotated[int, typer.Option(min=0, help="0 = no eval")] = 20,
    save_every: Annotated[int, typer.Option(min=1)] = 20,
    nproc: Annotated[int, typer.Option(min=1, help="data-parallel ranks")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    micro_batch_tokens: Annotated[int, typer.Option(min=2)] = 1024,
    seed: int = 0,
) -> None:
    """Pretrain with MuonClip and a WSD schedule; resumes from OUT/checkpoints when present."""
    if not data.is_file():
        console.print(f"[red]no such data file:[/] {data}")
        raise typer.Exit(2)
    options = PretrainOptions(
        model=preset, data=data, out=out, steps=steps, warmup_steps=warmup_steps, decay_fraction=decay_fraction,
        batch_size=batch_size, seq_len=seq_len, lr=lr, eval_every=eval_every, save_every=save_every, nproc=nproc,
        device=device, micro_batch_tokens=micro_batch_tokens, seed=seed,
    )
    columns = (TextColumn("pretrain"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("steps", total=steps, info="")

        def on_step(record: dict) -> None:
            info = f"loss {record['loss']:.3f} lr {record['lr']:.2e} {record['tokens_per_second']:.0f} tok/s"
            if "eval_loss" in record:
                info += f" eval {record['eval_loss']:.3f}"
            progress.update(task, completed=record["step"], info=info)

        final = pretrain(options, on_step)
    console.print(f"done: step {final}, checkpoints in {out / 'checkpoints'}")


@app.command("sft")
def sft_command(
    data: Annotated[Path, typer.Option(help="chat JSONL in OpenAI format ({'messages': [...], 'tools': [...]}), "
                                           "e.g. the sft.jsonl of k2rl synth")],
    preset: Annotated[str, typer.Option(help="model preset or HF checkpoint directory")] = "k2-nano",
    out: Annotated[Path, typer.Option(help="metrics.jsonl and checkpoints/ go here; rerun to resume")] = Path(
        ".k2rl/sft"),
    steps: Annotated[int, typer.Option(min=1)] = 50,
    batch_size: Annotated[int, typer.Option(min=1, help="conversations per step (global)")] = 4,
    max_seq_len: Annotated[int, typer.Option(min=2, help="longer conversations are truncated")] = 2048,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-3,
    save_every: Annotated[int, typer.Option(min=1)] = 10,
    nproc: Annotated[int, typer.Option(min=1, help="data-parallel ranks")] = 1,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    micro_batch_tokens: Annotated[int, typer.Option(min=2)] = 2048,
    tokenizer: Annotated[str | None, typer.Option(help="preset or directory with tokenizer.json; "
                                                      "default: the model's")] = None,
    seed: int = 0,
) -> None:
    """Supervised fine-tuning on chat data, loss on assistant turns only; resumes from OUT/checkpoints."""
    if not data.is_file():
        console.print(f"[red]no such data file:[/] {data}")
        raise typer.Exit(2)
    options = SFTOptions(model=preset, data=data, out=out, steps=steps, batch_size=batch_size,
                         max_seq_len=max_seq_len, lr=lr, save_every=save_every, nproc=nproc, device=device,
                         micro_batch_tokens=micro_batch_tokens, seed=seed, tokenizer=tokenizer)
    columns = (TextColumn("sft"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn())
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("steps", total=steps, info="")

            def on_step(record: dict) -> None:
                progress.update(task, completed=record["step"],
                                info=f"loss {record['loss']:.3f} {record['tokens_per_second']:.0f} tok/s")

            final = sft(options, on_step)
    except ValueError as error:
        console.print(f"[red]bad SFT data:[/] {error}")
        raise typer.Exit(2) from None
    console.print(f"done: step {final}, checkpoints in {out / 'checkpoints'}")
