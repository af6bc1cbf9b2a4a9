"""HF safetensors checkpoints: single file or sharded with ``model.safetensors.index.json``.

Reading streams one tensor at a time (memory-mapped shards), dequantises FP8 block-scaled
weights (``X.weight`` + ``X.weight_scale_inv``, possibly in different shards) and copies
into the model's existing parameters, so peak memory is the model plus one tensor.
Writing produces the same layout HF ``save_pretrained`` does; optionally FP8 like the
released K2 / DeepSeek-V3 checkpoints (every 2-D weight inside a decoder layer except the
router, with ``quantization_config`` in config.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from k2rl.models.fp8 import BLOCK, FP8_DTYPE, dequantize_fp8_blocks, quantize_fp8_blocks

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
SCALE_SUFFIX = "_scale_inv"
FP8_QUANTIZATION_CONFIG = {
    "activation_scheme": "dynamic",
    "fmt": "e4m3",
    "quant_method": "fp8",
    "weight_block_size": [BLOCK, BLOCK],
}


def tensor_locations(path: str | Path) -> dict[str, Path]:
    """Tensor name -> shard file, from the index when there is one."""
    path = Path(path)
    index = path / INDEX_FILE
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: path / shard for name, shard in weight_map.items()}
    files = (
        [path / SINGLE_FILE]
        if (path / SINGLE_FILE).exists()
        else sorted(path.glob("*.safetensors"))
    )
    if not files:
        raise FileNotFoundError(f"no safetensors weights in {path}")
    locations: dict[str, Path] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            locations.update((name, file) for name in f.keys())
    return locations


def iter_checkpoint(
    path: str | Path, *, dtype: torch.dtype | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) for every logical tensor, FP8 weights dequantised (to ``dtype`` or bf16)."""
    locations = tensor_locations(path)
    handles: dict[Path, object] = {}

    def get(name: str) -> torch.Tensor:
        file = locations[name]
        if file not in handles:
            handles[file] = safe_open(str(file), framework="pt")
        return handles[file].get_tensor(name)  # type: ignore[attr-defined]

    for name in sorted(locations, key=lambda n: (str(locations[n]), n)):
        if name.endswith(SCALE_SUFFIX) and name[: -len(SCALE_SUFFIX)] in locations:
            continue
        tensor = get(name)
        scale_name = name + SCALE_SUFFIX
        if tensor.dtype == FP8_DTYPE:
            if scale_name not in locations:
                raise ValueError(f"FP8 tensor {name} has no {scale_name}")
            tensor = dequantize_fp8_blocks(tensor, get(scale_name), dtype=dtype or torch.bfloat16)
        elif dtype is not None and tensor.is_floating_point():
            tensor = tensor.to(dtype)
        yield name, tensor


def load_state_dict(
    path: str | Path, *, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    return dict(iter_checkpoint(path, dtype=dtype))


def load_into(
    module: torch.nn.Module,
    path: str | Path,
    *,
    strict: bool = True,
    ignore: Callable[[str], bool] | None = None,
    optional: frozenset[str] = frozenset(),
) -> list[str]:
    """Copy checkpoint tensors into ``module``'s parameters and buffers (cast to their dtype).

    Names matching ``ignore`` are skipped (e.g. DeepSeek-V3's multi-token-prediction layer);
    names in ``optional`` may be absent (e.g. a tied ``lm_head.weight``). Under ``strict``
    any other unknown or missing name is an error. Returns the names that were skipped.
    """
    targets = dict(module.state_dict(keep_vars=True))
    seen: set[str] = set()
    skipped: list[str] = []
    with torch.no_grad():
        for name, tensor in iter_checkpoint(path):
            target = targets.get(name)
            if target is None:
                if strict and not (ignore is not None and ignore(name)):
                    raise KeyError(f"unexpected tensor {name} in checkpoint")
                skipped.append(name)
                continue
            if tuple(target.shape) != tuple(tensor.shape):
                raise ValueError(
                    f"{name}: checkpoint shape {tuple(tensor.shape)} != model {tuple(target.shape)}"
                )
            target.copy_(tensor)
            seen.add(name)
    missing = sorted(set(targets) - seen - optional)
    if strict and missing:
        raise KeyError(
            f"tensors missing from checkpoint: {missing[:8]}{' ...' if len(missing) > 8 else ''}"
        )
    return skipped


def fp8_eligible(name: str, tensor: torch.Tensor) -> bool:
    """The released K2 / DeepSeek-V3 FP8 layout: decoder-layer linear weights, router excluded."""
    return (
        tensor.dim() == 2
        and name.startswith("model.layers.")
        and name.endswith(".weight")
        and not name.endswith("mlp.gate.weight")
    )


def save_state_dict(
    state: Mapping[str, torch.Tensor],
    path: str | Path,
    *,
    max_shard_bytes: int = 5 * 2**30,
    fp8: bool = False,
) -> list[Path]:
    """Write ``state`` as HF safetensors, sharded by ``max_shard_bytes``; returns the files."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu")
        if fp8 and fp8_eligible(name, tensor):
            weight, scale_inv = quantize_fp8_blocks(tensor)
            tensors[name], tensors[name + SCALE_SUFFIX] = weight, scale_inv
        else:
            tensors[name] = tensor.contiguous()

    shards: list[dict[str, torch.Tensor]] = [{}]
    shard_bytes = 0
    for name, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and shard_bytes + size > max_shard_bytes:
            shards.append({})
            shard_bytes = 0
        shards[-1][name] = tensor
        shard_bytes += size

    metadata = {"format": "pt"}
    if len(shards) == 1:
        file = path / SINGLE_FILE
        save_file(shards[0], str(file), metadata=metadata)
        return [file]
    files, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        file = path / f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(file), metadata=metadata)
        files.append(file)
        weight_map.update((name, file.name) for name in shard)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (path / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return files
