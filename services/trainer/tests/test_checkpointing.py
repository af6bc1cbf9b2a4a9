"""Checkpoints: HF weights others can load, exact resumption, atomic saves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from k2rl.core.errors import InvalidArgument, NotFound
from k2rl.models import load_model
from k2rl.trainer.checkpointing import (
    COMPLETE_MARKER,
    build_model_for_rank,
    complete_steps,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.offload import Component
from k2rl.trainer.testing import make_engine, random_sequences, single_rank

CONFIG = TrainingConfig(lr=1e-2, micro_batch_tokens=64, schedule="wsd", warmup_steps=1, stable_steps=1,
                        decay_steps=3)


def _losses(engine, batches) -> list[float]:
    return [engine.train_lm(batch).lm_loss for batch in batches]


def test_resume_continues_exactly(tmp_path: Path) -> None:
    batches = [random_sequences(2, 16, seed=i) for i in range(4)]
    reference = make_engine(CONFIG)
    expected = _losses(reference, batches)

    first = make_engine(CONFIG)
    assert _losses(first, batches[:2]) == expected[:2]
    saved = save_checkpoint(first, tmp_path, include_optimizer=True, cursor={"position": 2})
    assert saved.path == tmp_path / "step_2" and saved.bytes_written > 0
    assert complete_steps(tmp_path) == [2]

    resumed = make_engine(CONFIG, seed=123)  # different initial weights: all must come from disk
    loaded = load_checkpoint(resumed, tmp_path, load_optimizer=True)
    assert loaded.step == 2 and loaded.cursor == {"position": 2}
    # Every file is read once, except config.json (the model already exists).
    assert loaded.bytes_read == saved.bytes_written - (saved.path / "config.json").stat().st_size
    assert _losses(resumed, batches[2:]) == expected[2:]  # bit-exact continuation


def test_hf_weights_load_in_k2rl_models_and_transformers(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    engine = make_engine()
    engine.train_lm(random_sequences(2, 16))
    path = save_checkpoint(engine, tmp_path / "ckpt", include_optimizer=False).path
    # K2 checkpoints say model_type "kimi_k2", which transformers knows only via remote code
    # (and without it skips the per-expert -> fused-expert key mapping); the architecture
    # is DeepseekV3's, so a copy that says so loads natively.
    hf_dir = tmp_path / "as-deepseek-v3"
    shutil.copytree(path, hf_dir)
    config = json.loads((hf_dir / "config.json").read_text())
    (hf_dir / "config.json").write_text(json.dumps({**config, "model_type": "deepseek_v3"}))
    ids = torch.tensor([list(range(40, 56))])
    with torch.no_grad():
        ours = engine.model(ids)
        reloaded = load_model(path)(ids)
        hf = transformers.DeepseekV3ForCausalLM.from_pretrained(hf_dir, attn_implementation="eager").eval()
        theirs = hf(ids).logits
    torch.testing.assert_close(reloaded, ours, rtol=0, atol=1e-5)  # SDPA vs the max-logit-tracking path
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-4)
    with pytest.raises(InvalidArgument, match="no optimizer state"):
        load_checkpoint(make_engine(), tmp_path / "ckpt", load_optimizer=True)


def test_save_while_offloaded_writes_the_host_copies(tmp_path: Path) -> None:
    engine = make_engine()
    engine.train_lm(random_sequences(2, 16))
    expected = {k: v.clone() for k, v in engine.model.state_dict().items()}
    engine.offload.offload(list(Component))
    path = save_checkpoint(engine, tmp_path, include_optimizer=True).path
    model = load_model(path)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in expected.items())


def test_incomplete_saves_are_never_loaded(tmp_path: Path) -> None:
    engine = make_engine()
    save_checkpoint(engine, tmp_path, include_optimizer=True)
    engine.train_lm(random_sequences(1, 8))
    crashed = save_checkpoint(engine, tmp_path, include_optimizer=True).path
    (crashed / COMPLETE_MARKER).unlink()  # as if killed before the marker
    assert resolve_checkpoint(tmp_path) == tmp_path / "step_0"
    with pytest.raises(NotFound):
        resolve_checkpoint(tmp_path, step=1)
    with pytest.raises(NotFound):
        resolve_checkpoint(tmp_path / "nothing-here")


def test_startup_reads_an_hf_checkpoint(tiny_checkpoint: Path) -> None:
    model, bytes_read = build_model_for_rank(str(tiny_checkpoint), single_rank())
    assert bytes_read == (tiny_checkpoint / "model.safetensors").stat().st_size
    assert torch.equal(model.lm_head.weight, load_model(tiny_checkpoint).lm_head.weight)
    config = json.loads((tiny_checkpoint / "config.json").read_text())
    assert config["num_hidden_layers"] == 2
    with pytest.raises(InvalidArgument, match="neither a preset nor"):
        build_model_for_rank("no-such-preset", single_rank())


def test_load_rejects_a_checkpoint_of_another_model(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from k2rl.models import build_model, get_preset, save_model

    save_model(build_model(get_preset("llama-nano")), tmp_path / "llama")
    engine = make_engine()
    before = {k: v.clone() for k, v in engine.model.state_dict().items()}
    with pytest.raises(InvalidArgument, match="does not match"):
        load_checkpoint(engine, tmp_path / "llama", load_optimizer=False)
    assert all(torch.equal(before[k], v) for k, v in engine.model.state_dict().items())  # untouched
