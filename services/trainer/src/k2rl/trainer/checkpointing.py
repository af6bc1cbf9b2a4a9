"""Trainer checkpoints: HF weights anyone can load, plus what exact resumption needs.

Layout of ``<directory>/step_<N>/``::

    config.json, model.safetensors[.index.json]   HF DeepseekV3/Llama layout (rank 0 writes);
                                                  loads in k2rl.models, transformers, vLLM
    trainer_state.json                            step, world size, model, data cursor
    optimizer/rank_<r>.pt                         rank r's ZeRO-1 shard of the optimizer state,
                                                  keyed by parameter name, + LR-schedule state
    rng/rank_<r>.pt                               torch / CUDA / Python RNG states of rank r
    COMPLETE                                      written last: a directory without it is a
                                                  crashed save and is never loaded

Everything is written into ``step_<N>.tmp`` and renamed once every rank has finished, so
a kill -9 during a save leaves the previous checkpoint the latest complete one.

Loading reads each byte once (K2 §3.3.3): rank 0 reads the safetensors files and
broadcasts every tensor; each rank reads only the optimizer shards holding parameters it
owns (its own file when the world size is unchanged; optimizer state is keyed by name, so
a different world size reshards on load).
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from k2rl.core.errors import FailedPrecondition, InvalidArgument, NotFound
from k2rl.models import CausalLM, load_hf_config, model_class, save_model
from k2rl.models.checkpoint import SCALE_SUFFIX, iter_checkpoint, tensor_locations
from k2rl.models.loading import build_model, get_preset
from k2rl.trainer.distributed import (
    DistContext,
    all_reduce_scalar,
    barrier,
    broadcast_object,
    broadcast_tensor_,
)
from k2rl.trainer.engine import TrainingEngine
from k2rl.trainer.offload import Component

STATE_FILE = "trainer_state.json"
COMPLETE_MARKER = "COMPLETE"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass(frozen=True)
class _LoadFailed:
    message: str


@dataclass(frozen=True)
class SaveResult:
    path: Path
    step: int
    bytes_written: int
    duration_s: float


@dataclass(frozen=True)
class LoadResult:
    path: Path
    step: int
    bytes_read: int
    duration_s: float
    cursor: Any = None


def step_dir(directory: Path, step: int) -> Path:
    return directory / f"step_{step}"


def complete_steps(directory: Path) -> list[int]:
    """Steps with a complete checkpoint under ``directory``, ascending."""
    if not directory.is_dir():
        return []
    steps = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and (child / COMPLETE_MARKER).exists():
            steps.append(int(match.group(1)))
    return sorted(steps)


def resolve_checkpoint(path: Path, step: int | None = None) -> Path:
    """A checkpoint directory itself, or ``step_<step>`` (default: latest complete) under it."""
    if (path / COMPLETE_MARKER).exists() and step is None:
        return path
    if (path / "config.json").exists() and not (path / STATE_FILE).exists() and step is None:
        return path  # a plain HF checkpoint (weights only)
    steps = complete_steps(path)
    if step is not None:
        if step not in steps:
            raise NotFound(f"no complete checkpoint for step {step} under {path} (have {steps})")
        return step_dir(path, step)
    if not steps:
        raise NotFound(f"no complete checkpoint under {path}")
    return step_dir(path, steps[-1])


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _readable_state(engine: TrainingEngine) -> dict[str, torch.Tensor]:
    """HF-named weights, read from the host copies when they are offloaded."""
    state = engine.model.state_dict(keep_vars=True)
    out = {}
    for name, tensor in state.items():
        host = engine.offload.host_copy(tensor)
        out[name] = (host if host is not None else tensor).detach()
    return out


def save_checkpoint(
    engine: TrainingEngine,
    directory: Path,
    *,
    include_optimizer: bool = True,
    cursor: Any = None,
) -> SaveResult:
    """Collective: every rank calls it. Returns the same result on every rank."""
    start = time.perf_counter()
    ctx = engine.ctx
    final = step_dir(directory, engine.step)
    tmp = final.with_name(final.name + ".tmp")
    if ctx.is_leader:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _save_weights(engine, tmp)
        (tmp / STATE_FILE).write_text(json.dumps({
            "step": engine.step,
            "world_size": ctx.world_size,
            "has_optimizer_state": include_optimizer,
            "cursor": cursor,
        }, indent=2) + "\n")
    barrier(ctx)
    if include_optimizer:
        (tmp / "optimizer").mkdir(exist_ok=True)
        (tmp / "rng").mkdir(exist_ok=True)
        torch.save(_optimizer_shard(engine), tmp / "optimizer" / f"rank_{ctx.rank:05d}.pt")
        torch.save(_rng_state(), tmp / "rng" / f"rank_{ctx.rank:05d}.pt")
    barrier(ctx)
    written = 0
    if ctx.is_leader:
        written = _dir_bytes(tmp)
        (tmp / COMPLETE_MARKER).write_text("")
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    barrier(ctx)
    written = int(all_reduce_scalar(float(written), ctx))
    return SaveResult(final, engine.step, written, time.perf_counter() - start)


def _save_weights(engine: TrainingEngine, path: Path) -> None:
    # save_model takes a model; while parameters are offloaded, point it at the host copies.
    if engine.offload.is_offloaded(Component.PARAMETERS):
        shadow = build_model(engine.model.config, device="meta")
        shadow.load_state_dict(_readable_state(engine), assign=True)
        save_model(shadow, path)
    else:
        save_model(engine.model, path)


def _optimizer_shard(engine: TrainingEngine) -> dict[str, Any]:
    state: dict[str, dict[str, Any]] = {}
    for p, values in engine.optimizer.state.items():
        name = engine.param_names[id(p)]
        state[name] = {}
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                host = engine.offload.host_copy(value)
                value = (host if host is not None else value).detach().cpu().clone()
            state[name][key] = value
    return {"state": state, "scheduler": engine.scheduler.state_dict(), "step": engine.step}


def _rng_state() -> dict[str, Any]:
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def load_checkpoint(
    engine: TrainingEngine,
    path: Path,
    *,
    step: int | None = None,
    load_optimizer: bool = True,
) -> LoadResult:
    """Collective: rank 0 resolves and reads the weights, broadcasts them; see module docstring."""
    start = time.perf_counter()
    ctx = engine.ctx
    if engine.offload.is_offloaded(Component.PARAMETERS):
        raise FailedPrecondition("parameters are offloaded; call Onload before LoadCheckpoint")
    resolved: Path | str = ""
    error: str | None = None
    if ctx.is_leader:
        try:
            resolved = resolve_checkpoint(path, step)
        except NotFound as exc:
            error = exc.message
    resolved, error = broadcast_object((resolved, error), ctx)
    if error is not None:
        raise NotFound(error)
    resolved = Path(resolved)
    state: dict[str, Any] = {}
    if (resolved / STATE_FILE).exists():
        state = json.loads((resolved / STATE_FILE).read_text())
    if load_optimizer and not state.get("has_optimizer_state"):
        raise InvalidArgument(f"{resolved} holds no optimizer state (saved weights only)", field="load_optimizer_state")
    bytes_read = broadcast_weights_from_leader(engine.model, resolved, ctx)
    bytes_read += (resolved / STATE_FILE).stat().st_size if ctx.is_leader and state else 0
    if load_optimizer:
        bytes_read += _load_optimizer_shards(engine, resolved, int(state["world_size"]))
        bytes_read += _restore_rng(resolved / "rng" / f"rank_{ctx.rank:05d}.pt")
    engine.step = int(state.get("step", 0))
    if not load_optimizer:
        engine.optimizer.state.clear()
        engine.scheduler.last_epoch = engine.step - 1
        engine.scheduler.step()  # the schedule's LR at the checkpoint's step
    total = int(all_reduce_scalar(float(bytes_read), ctx))
    return LoadResult(resolved, engine.step, total, time.perf_counter() - start, state.get("cursor"))


@torch.no_grad()
def broadcast_weights_from_leader(model: CausalLM, path: Path, ctx: DistContext) -> int:
    """Rank 0 reads the HF safetensors under ``path`` and every rank receives every tensor.

    Returns the bytes this rank read from storage (the checkpoint's size on rank 0, 0 elsewhere).
    """
    targets = model.state_dict(keep_vars=True)
    if ctx.is_leader:
        try:
            locations = tensor_locations(path)
            _check_layout(locations, targets, model.config.tie_word_embeddings, path)
            bytes_read = sum(f.stat().st_size for f in set(locations.values()))
            for name, tensor in iter_checkpoint(path):
                targets[name].data.copy_(tensor)
                if ctx.is_distributed:
                    broadcast_object(name, ctx)  # followers learn which tensor comes next
                    broadcast_tensor_(targets[name].data, ctx)
        except (InvalidArgument, OSError) as error:
            broadcast_object(_LoadFailed(str(error)), ctx)  # release the followers, then fail
            raise InvalidArgument(str(error), field="path") from None
        broadcast_object(None, ctx)
    else:
        bytes_read = 0
        while (name := broadcast_object(None, ctx)) is not None:
            if isinstance(name, _LoadFailed):
                raise InvalidArgument(name.message, field="path")
            broadcast_tensor_(targets[name].data, ctx)
    if model.config.tie_word_embeddings:
        model.tie_weights()
    return bytes_read


def _check_layout(
    locations: dict[str, Path], targets: dict[str, torch.Tensor], tied: bool, path: Path
) -> None:
    """Names and shapes of the checkpoint match the model, checked before any tensor is copied."""
    shapes: dict[str, tuple[int, ...]] = {}
    for file in set(locations.values()):
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():
                if not name.endswith(SCALE_SUFFIX):
                    shapes[name] = tuple(f.get_slice(name).get_shape())
    unknown = sorted(set(shapes) - set(targets))
    missing = sorted(set(targets) - set(shapes) - ({"lm_head.weight"} if tied else set()))
    wrong = [n for n in shapes if n in targets and shapes[n] != tuple(targets[n].shape)]
    if unknown or missing or wrong:
        detail = "; ".join(
            f"{label}: {names[:4]}" for label, names in
            (("not in the model", unknown), ("missing", missing), ("wrong shape", wrong)) if names
        )
        raise InvalidArgument(f"{path} does not match the trainer's model ({detail})", field="path")


def _load_optimizer_shards(engine: TrainingEngine, path: Path, saved_world_size: int) -> int:
    ctx = engine.ctx
    owned = {engine.param_names[id(p)]: p for p in engine.optimizer.owned_params()}
    files = (
        [path / "optimizer" / f"rank_{ctx.rank:05d}.pt"]
        if saved_world_size == ctx.world_size
        else [path / "optimizer" / f"rank_{r:05d}.pt" for r in range(saved_world_size)]
    )
    engine.optimizer.state.clear()
    bytes_read = 0
    scheduler_state = None
    for file in files:
        bytes_read += file.stat().st_size
        shard = torch.load(file, map_location="cpu", weights_only=False)
        scheduler_state = shard["scheduler"]
        for name, values in shard["state"].items():
            param = owned.get(name)
            if param is None:
                continue
            engine.optimizer.state[param] = {
                k: v.to(param.device) if isinstance(v, torch.Tensor) else v for k, v in values.items()
            }
    if scheduler_state is not None:
        engine.scheduler.load_state_dict(scheduler_state)
        # load_state_dict restores the schedule's position, not the LR it already set on the groups.
        for group, lr in zip(engine.optimizer.param_groups, engine.scheduler.get_last_lr(), strict=True):
            group["lr"] = lr
    return bytes_read


def _restore_rng(file: Path) -> int:
    if not file.exists():  # resharded onto more ranks than saved: fresh streams for the new ones
        return 0
    rng = torch.load(file, map_location="cpu", weights_only=False)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return file.stat().st_size


def build_model_for_rank(model_ref: str, ctx: DistContext, *, seed: int = 0) -> tuple[CausalLM, int]:
    """The starting model on every rank, and the bytes this rank read.

    A preset is initialised from ``seed`` identically on every rank (nothing to read). An
    HF checkpoint directory is read by rank 0 only and broadcast (K2 §3.3.3).
    """
    path = Path(model_ref)
    if not (path / "config.json").exists():
        try:
            config = get_preset(model_ref)
        except KeyError as error:
            raise InvalidArgument(f"{model_ref!r} is neither a preset nor a checkpoint directory: {error}",
                                  field="model") from None
        return build_model(config, device=ctx.device, seed=seed), 0
    config = load_hf_config(path)
    with torch.device("meta"):
        model = model_class(config)(config)
    model.to_empty(device=ctx.device)
    model.tie_weights()
    model.float()
    for _, moe in model.moe_modules():
        moe.gate.float()
    return model, broadcast_weights_from_leader(model, path, ctx)
