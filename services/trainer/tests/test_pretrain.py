"""``k2rl train pretrain``: WSD, eval, checkpoints, and resumption after kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from k2rl.trainer.pretrain import PretrainOptions, pretrain

STEPS = 6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    docs = [f"Document {i}: the quick brown fox jumps over the lazy dog {i * 7}." for i in range(40)]
    path.write_text("\n\n".join(docs))
    return path


def _options(model: Path, data: Path, out: Path) -> PretrainOptions:
    return PretrainOptions(model=str(model), data=data, out=out, steps=STEPS, warmup_steps=2, decay_fraction=0.5,
                           batch_size=4, seq_len=24, lr=1e-2, eval_every=3, save_every=2, device="cpu",
                           micro_batch_tokens=48)


def _records(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _cli(options: PretrainOptions) -> list[str]:
    return [sys.executable, "-c", "from k2rl.core.cli import main; main()", "train", "pretrain",
            "--data", str(options.data), "--preset", options.model, "--out", str(options.out),
            "--steps", str(options.steps), "--warmup-steps", str(options.warmup_steps),
            "--decay-fraction", str(options.decay_fraction), "--batch-size", str(options.batch_size),
            "--seq-len", str(options.seq_len), "--lr", str(options.lr), "--eval-every", str(options.eval_every),
            "--save-every", str(options.save_every), "--device", "cpu",
            "--micro-batch-tokens", str(options.micro_batch_tokens)]


def test_resume_after_kill_9_matches_an_uninterrupted_run(tiny_checkpoint: Path, corpus: Path, tmp_path: Path) -> None:
    reference = _options(tiny_checkpoint, corpus, tmp_path / "reference")
    assert pretrain(reference) == STEPS
    expected = _records(reference.out)
    assert [r["step"] for r in expected] == list(range(1, STEPS + 1))
    assert [r["lr"] for r in expected][:3] == pytest.approx([5e-3, 1e-2, 1e-2])  # WSD warm-up, then stable
    assert expected[-1]["lr"] == pytest.approx(1e-3)  # decayed to final_lr_ratio * lr
    assert "eval_loss" in expected[2] and expected[-1]["loss"] < expected[0]["loss"]

    interrupted = _options(tiny_checkpoint, corpus, tmp_path / "interrupted")
    proc = subprocess.Popen(_cli(interrupted), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while len(_records(interrupted.out)) < 3:  # past the step-2 checkpoint, before step 4's
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "pretrain made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(_records(interrupted.out)) < STEPS

    resumed = subprocess.run(_cli(interrupted), capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()[-2000:]
    got = _records(interrupted.out)
    assert [r["step"] for r in got] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in got] == [r["loss"] for r in expected]  # bit-identical sequence
    assert [r.get("eval_loss") for r in got] == [r.get("eval_loss") for r in expected]
