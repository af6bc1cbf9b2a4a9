"""The pretraining loop behind ``k2rl train pretrain``: WSD schedule, eval, checkpoints, resume.

Progress is durable: every step appends a line to ``<out>/metrics.jsonl`` and every
``save_every`` steps a complete checkpoint (weights, optimizer, RNG, data cursor) lands in
``<out>/checkpoints/step_<N>/``. Started again with the same ``out``, the loop resumes
from the latest complete checkpoint -- after a clean exit or a kill -9 alike -- and
drops metric lines of steps it is about to redo, so the file reads as one run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k2rl.trainer.checkpointing import complete_steps
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.corpus import WindowCorpus
from k2rl.trainer.launch import JobSpec, start_job
from k2rl.trainer.metrics import StepMetrics


@dataclass(frozen=True)
class PretrainOptions:
    model: str
    data: Path
    out: Path
    steps: int = 100
    warmup_steps: int = 10
    decay_fraction: float = 0.2
    batch_size: int = 8
    seq_len: int = 128
    lr: float = 3e-3
    eval_every: int = 20
    save_every: int = 20
    nproc: int = 1
    device: str = "auto"
    micro_batch_tokens: int = 1024
    seed: int = 0

    def training_config(self) -> TrainingConfig:
        decay = int(self.steps * self.decay_fraction)
        warmup = min(self.warmup_steps, self.steps - decay)
        return TrainingConfig(
            lr=self.lr, schedule="wsd", warmup_steps=warmup, stable_steps=self.steps - decay - warmup,
            decay_steps=decay, micro_batch_tokens=self.micro_batch_tokens, seed=self.seed,
        )


def truncate_metrics(path: Path, after_step: int) -> None:
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= after_step]
    path.write_text("".join(line + "\n" for line in kept))


def pretrain(options: PretrainOptions, on_step: Callable[[dict[str, Any]], None] = lambda record: None) -> int:
    """Run (or resume) pretraining to ``options.steps``; returns the final step."""
    corpus = WindowCorpus(options.data, options.seq_len, seed=options.seed)

    def step(job: Any, cursor: int) -> dict[str, Any]:
        metrics = job.train_lm(corpus.batch(cursor, options.batch_size))
        record = step_record(metrics)
        if options.eval_every and metrics.step % options.eval_every == 0:
            record["eval_loss"] = job.eval_lm(corpus.eval_batch())
        return record

    spec = JobSpec(model=options.model, training=options.training_config(), device=options.device,
                   nproc=options.nproc)
    return run_resumable(spec, options.out, steps=options.steps, batch_size=options.batch_size,
                         save_every=options.save_every, step=step, on_step=on_step)


def run_resumable(spec: JobSpec, out: Path, *, steps: int, batch_size: int, save_every: int,
                  step: Callable[[Any, int], dict[str, Any]],
                  on_step: Callable[[dict[str, Any]], None]) -> int:
    """The durable loop shared by ``k2rl train pretrain`` and ``sft`` (see module docstring).

    ``step(job, cursor)`` trains on the batch at data position ``cursor`` and returns the
    step's metrics record; the cursor advances by ``batch_size`` and is saved with each
    checkpoint so a resumed run continues with the data it had not seen.
    """
    checkpoints = out / "checkpoints"
    metrics_file = out / "metrics.jsonl"
    out.mkdir(parents=True, exist_ok=True)
    local = start_job(spec)
    job = local.job
    try:
        cursor = 0
        if complete_steps(checkpoints):
            loaded = job.load(checkpoints, load_optimizer=True)
            cursor = int(loaded.cursor or 0)
        truncate_metrics(metrics_file, job.engine.step)
        with metrics_file.open("a") as log:
            while job.engine.step < steps:
                record = step(job, cursor)
                cursor += batch_size
                log.write(json.dumps(record) + "\n")
                log.flush()
                on_step(record)
                if record["step"] % save_every == 0 or record["step"] == steps:
                    job.save(checkpoints, include_optimizer=True, cursor=cursor)
        return job.engine.step
    finally:
        local.close()


def step_record(m: StepMetrics) -> dict[str, Any]:
    return {
        "step": m.step,
        "loss": m.lm_loss,
        "lr": m.learning_rate,
        "grad_norm": m.grad_norm,
        "tokens_per_second": m.tokens_per_second,
        "max_logit": m.qk_clip.max_logit if m.qk_clip else None,
        "clipped_heads": m.qk_clip.num_clipped if m.qk_clip else 0,
    }
