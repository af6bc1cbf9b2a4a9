"""Build, load and save models: ``load_model("k2-nano")`` or ``load_model("/ckpt/dir")``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from k2rl.models import checkpoint
from k2rl.models.config import DeepseekV3Config, ModelConfig, load_hf_config, to_hf_config
from k2rl.models.deepseek_v3 import DeepseekV3ForCausalLM
from k2rl.models.llama import LlamaForCausalLM
from k2rl.models.presets import get_preset
from k2rl.models.transformer import CausalLM

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def model_class(config: ModelConfig) -> type[CausalLM]:
    return DeepseekV3ForCausalLM if isinstance(config, DeepseekV3Config) else LlamaForCausalLM


def cast_model(model: CausalLM, dtype: torch.dtype) -> CausalLM:
    """Cast to ``dtype`` but keep MoE routers in fp32, as HF does (expert choice is sensitive)."""
    model.to(dtype)
    for _, moe in model.moe_modules():
        moe.gate.float()
    return model


def build_model(
    config: ModelConfig,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = 0,
) -> CausalLM:
    """A randomly initialised model (HF init); deterministic for a given ``seed``."""
    with torch.device(device):
        model = model_class(config)(config)
    if seed is not None and torch.device(device).type != "meta":
        generator = torch.Generator(device=device).manual_seed(seed)
        model.init_weights(generator)
    return cast_model(model, dtype)


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    return dtype if isinstance(dtype, torch.dtype) else _DTYPES[dtype.removeprefix("torch.")]


def _checkpoint_dtype(config: ModelConfig) -> torch.dtype:
    name = config.hf_extra.get("dtype") or config.hf_extra.get("torch_dtype") or "float32"
    return _DTYPES.get(str(name).removeprefix("torch."), torch.float32)


_LAYER_INDEX = re.compile(r"^model\.layers\.(\d+)\.")


def _beyond_last_layer(num_layers: int):
    """DeepSeek-V3 checkpoints carry the multi-token-prediction module as extra layers
    (``model.layers.61.*`` for 61 decoder layers); it is not part of the causal LM."""

    def matches(name: str) -> bool:
        m = _LAYER_INDEX.match(name)
        return bool(m) and int(m.group(1)) >= num_layers

    return matches


def load_model(
    path_or_preset: str | Path,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype | str = "auto",
    seed: int | None = 0,
) -> CausalLM:
    """A preset name (random init from ``seed``) or an HF checkpoint directory.

    ``dtype="auto"`` uses the checkpoint's ``torch_dtype`` (fp32 for presets). Checkpoint
    weights are streamed into a model allocated without initialisation.
    """
    path = Path(path_or_preset)
    if not (path / "config.json").exists():
        config = get_preset(str(path_or_preset))
        return build_model(
            config,
            device=device,
            dtype=torch.float32 if dtype == "auto" else _as_dtype(dtype),
            seed=seed,
        )

    config = load_hf_config(path)
    target_dtype = _checkpoint_dtype(config) if dtype == "auto" else _as_dtype(dtype)
    with torch.device("meta"):
        model = model_class(config)(config)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives tied parameters separate storage
    cast_model(model, target_dtype)
    checkpoint.load_into(
        model,
        path,
        strict=True,
        ignore=_beyond_last_layer(config.num_hidden_layers),
        optional=frozenset({"lm_head.weight"}) if config.tie_word_embeddings else frozenset(),
    )
    return model


def save_model(
    model: CausalLM,
    path: str | Path,
    *,
    max_shard_bytes: int = 5 * 2**30,
    fp8: bool = False,
    dtype: torch.dtype | None = None,
) -> None:
    """HF layout: config.json + (sharded) safetensors; optionally FP8 block-scaled."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    hf_config = to_hf_config(model.config)
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    if dtype is not None:
        state = {
            k: v.to(dtype) if v.is_floating_point() and ".mlp.gate." not in k else v
            for k, v in state.items()
        }
    stored = dtype or model.lm_head.weight.dtype
    hf_config["torch_dtype"] = str(stored).removeprefix("torch.")
    hf_config.pop("dtype", None)
    if fp8:
        hf_config["quantization_config"] = dict(checkpoint.FP8_QUANTIZATION_CONFIG)
    else:
        hf_config.pop("quantization_config", None)
    (path / "config.json").write_text(json.dumps(hf_config, indent=2, sort_keys=True) + "\n")
    checkpoint.save_state_dict(state, path, max_shard_bytes=max_shard_bytes, fp8=fp8)
