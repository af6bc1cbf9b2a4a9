"""Typed model configs and their mapping to/from HF ``config.json``.

Two architectures: ``DeepseekV3Config`` (K2 / DeepSeek-V3: MLA + MoE, K2 report §2.3) and
``LlamaConfig`` (dense GQA: Llama, Qwen2, Qwen3). ``from_hf_config`` accepts both the
classic HF layout (``rope_theta`` + ``rope_scaling``) and the transformers>=5 layout
(``rope_parameters``); ``to_hf_config`` writes a dict that transformers and vLLM read.
Fields we do not model (``auto_map``, ``quantization_config``, MTP layer counts, ...) are
kept in ``hf_extra`` so a load/save round trip does not lose them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEEPSEEK_MODEL_TYPES = ("deepseek_v3", "kimi_k2")
LLAMA_MODEL_TYPES = ("llama", "qwen2", "qwen3")


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters; ``type`` is one of default | linear | llama3 | yarn."""

    theta: float = 10000.0
    type: str = "default"
    factor: float | None = None
    original_max_position_embeddings: int | None = None
    # YaRN
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0

    def __post_init__(self) -> None:
        if self.type not in ("default", "linear", "llama3", "yarn"):
            raise ValueError(f"unsupported rope type {self.type!r}")
        if self.type != "default" and self.factor is None and self.type != "yarn":
            raise ValueError(f"rope type {self.type!r} needs a factor")


@dataclass(frozen=True)
class DeepseekV3Config:
    """K2 / DeepSeek-V3 decoder: MLA attention, sigmoid-routed MoE with shared experts."""

    model_type: str = "deepseek_v3"
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 768  # dense (first_k_dense_replace) layers
    moe_intermediate_size: int = 128  # one routed / shared expert
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    q_lora_rank: int | None = 96  # None: plain q_proj
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 16
    v_head_dim: int = 32
    n_routed_experts: int = 16
    n_shared_experts: int = 1
    num_experts_per_tok: int = 2
    n_group: int = 1
    topk_group: int = 1
    norm_topk_prob: bool = True
    routed_scaling_factor: float = 1.0
    first_k_dense_replace: int = 1
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    rope: RopeConfig = field(default_factory=RopeConfig)
    # HF DeepSeek checkpoints store q_pe / k_pe rows as interleaved pairs (x0,x1),(x2,x3)...
    rope_interleave: bool = True
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    hf_extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.model_type not in DEEPSEEK_MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r} is not a DeepSeek-V3 type")
        if self.n_routed_experts % self.n_group:
            raise ValueError("n_routed_experts must be divisible by n_group")
        if not 1 <= self.topk_group <= self.n_group:
            raise ValueError("topk_group must be in [1, n_group]")
        if self.num_experts_per_tok > self.n_routed_experts // self.n_group * self.topk_group:
            raise ValueError("num_experts_per_tok exceeds the experts in the selected groups")
        if self.qk_rope_head_dim % 2:
            raise ValueError("qk_rope_head_dim must be even")

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    def is_moe_layer(self, layer_idx: int) -> bool:
        return layer_idx >= self.first_k_dense_replace


@dataclass(frozen=True)
class LlamaConfig:
    """Dense GQA decoder (Llama / Qwen2 / Qwen3)."""

    model_type: str = "llama"
    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 768
    num_hidden_layers: int = 4
    num_attention_heads: int = 8
    num_key_value_heads: int = 2
    head_dim: int = 32
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_word_embeddings: bool = False
    qkv_bias: bool = False  # Llama attention_bias / Qwen2 (always on)
    o_bias: bool = False  # Llama attention_bias only
    mlp_bias: bool = False
    qk_norm: bool = False  # Qwen3 per-head RMSNorm on q and k before RoPE
    hidden_act: str = "silu"
    initializer_range: float = 0.02
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    hf_extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.model_type not in LLAMA_MODEL_TYPES:
            raise ValueError(f"model_type {self.model_type!r} is not a dense GQA type")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.model_type == "qwen2" and not (self.qkv_bias and not self.o_bias):
            raise ValueError("qwen2 has q/k/v bias and no o_proj bias")
        if (self.model_type == "qwen3") != self.qk_norm:
            raise ValueError("q_norm/k_norm exist exactly in qwen3")


ModelConfig = DeepseekV3Config | LlamaConfig


# --- HF config.json -> typed config -------------------------------------------------------

_ROPE_KEYS = ("rope_theta", "rope_scaling", "rope_parameters", "partial_rotary_factor")


def _rope_from_hf(d: dict[str, Any], default_theta: float) -> RopeConfig:
    params = dict(d.get("rope_parameters") or {})
    scaling = d.get("rope_scaling") or {}
    params = {**scaling, **params}
    if params.get("partial_rotary_factor", d.get("partial_rotary_factor", 1.0)) != 1.0:
        raise NotImplementedError("partial_rotary_factor != 1 is not supported")
    rope_type = params.get("rope_type", params.get("type", "default")) or "default"
    theta = params.get("rope_theta", d.get("rope_theta", default_theta))
    kwargs: dict[str, Any] = {"theta": float(theta), "type": rope_type}
    if rope_type == "default":
        return RopeConfig(**kwargs)
    if params.get("factor") is not None:
        kwargs["factor"] = float(params["factor"])
    orig = params.get("original_max_position_embeddings", d.get("original_max_position_embeddings"))
    kwargs["original_max_position_embeddings"] = int(orig or d["max_position_embeddings"])
    for key in ("mscale", "mscale_all_dim", "attention_factor"):
        if params.get(key) is not None:
            kwargs[key] = float(params[key])
    # HF treats a falsy beta as "use the default" (``or 32`` / ``or 1``); do the same.
    kwargs["beta_fast"] = float(params.get("beta_fast") or 32.0)
    kwargs["beta_slow"] = float(params.get("beta_slow") or 1.0)
    for key in ("low_freq_factor", "high_freq_factor"):
        if params.get(key) is not None:
            kwargs[key] = float(params[key])
    if "truncate" in params:
        kwargs["truncate"] = bool(params["truncate"])
    return RopeConfig(**kwargs)


def _rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
    """Classic layout: ``rope_theta`` + ``rope_scaling`` (read by transformers 4.x, 5.x, vLLM)."""
    out: dict[str, Any] = {"rope_theta": rope.theta}
    if rope.type == "default":
        out["rope_scaling"] = None
        return out
    scaling: dict[str, Any] = {"rope_type": rope.type, "type": rope.type}
    if rope.factor is not None:
        scaling["factor"] = rope.factor
    scaling["original_max_position_embeddings"] = rope.original_max_position_embeddings
    if rope.type == "yarn":
        scaling.update(beta_fast=rope.beta_fast, beta_slow=rope.beta_slow, truncate=rope.truncate)
        for key in ("mscale", "mscale_all_dim", "attention_factor"):
            if getattr(rope, key) is not None:
                scaling[key] = getattr(rope, key)
    if rope.type == "llama3":
        scaling.update(low_freq_factor=rope.low_freq_factor, high_freq_factor=rope.high_freq_factor)
    out["rope_scaling"] = scaling
    return out


def _dataclass_kwargs(cls: type, d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = {f.name for f in dataclasses.fields(cls)} - {"rope", "hf_extra", "model_type"}
    known = {k: v for k, v in d.items() if k in names and v is not None}
    extra = {k: v for k, v in d.items() if k not in names and k not in _ROPE_KEYS}
    return known, extra


def _deepseek_from_hf(d: dict[str, Any]) -> DeepseekV3Config:
    if d.get("scoring_func", "sigmoid") != "sigmoid":
        raise NotImplementedError("only the sigmoid router (DeepSeek-V3 / K2) is supported")
    if d.get("topk_method", "noaux_tc") != "noaux_tc":
        raise NotImplementedError("only topk_method=noaux_tc (bias-corrected top-k) is supported")
    known, extra = _dataclass_kwargs(DeepseekV3Config, d)
    # ``q_lora_rank: null`` is meaningful (plain q_proj), so keep an explicit None.
    known["q_lora_rank"] = d.get("q_lora_rank", DeepseekV3Config.q_lora_rank)
    known.setdefault("n_group", 1)
    known.setdefault("topk_group", 1)
    extra.pop("head_dim", None)  # HF writes head_dim = qk_rope_head_dim; derived, not a knob
    extra.pop("qk_head_dim", None)
    return DeepseekV3Config(
        model_type=d["model_type"],
        rope=_rope_from_hf(d, 10000.0),
        hf_extra=extra,
        **known,
    )


def _llama_from_hf(d: dict[str, Any]) -> LlamaConfig:
    model_type = d["model_type"]
    if d.get("use_sliding_window"):
        raise NotImplementedError("sliding-window attention is not supported")
    known, extra = _dataclass_kwargs(LlamaConfig, d)
    known.setdefault("head_dim", d["hidden_size"] // d["num_attention_heads"])
    known.setdefault("num_key_value_heads", d["num_attention_heads"])
    attention_bias = bool(extra.pop("attention_bias", False))
    if model_type == "llama":
        known.update(qkv_bias=attention_bias, o_bias=attention_bias)
    elif model_type == "qwen2":
        known.update(qkv_bias=True, o_bias=False)
    else:  # qwen3
        known.update(qkv_bias=attention_bias, o_bias=attention_bias, qk_norm=True)
    return LlamaConfig(
        model_type=model_type, rope=_rope_from_hf(d, 10000.0), hf_extra=extra, **known
    )


def from_hf_config(d: dict[str, Any]) -> ModelConfig:
    """Typed config from the dict of an HF ``config.json``."""
    model_type = d.get("model_type")
    if model_type in DEEPSEEK_MODEL_TYPES:
        return _deepseek_from_hf(d)
    if model_type in LLAMA_MODEL_TYPES:
        return _llama_from_hf(d)
    raise NotImplementedError(f"unsupported model_type {model_type!r}")


def load_hf_config(path: str | Path) -> ModelConfig:
    """Read ``config.json`` from a checkpoint directory (or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / "config.json"
    return from_hf_config(json.loads(path.read_text()))


# --- typed config -> HF config.json -------------------------------------------------------

_ARCHITECTURES = {
    "deepseek_v3": "DeepseekV3ForCausalLM",
    "kimi_k2": "DeepseekV3ForCausalLM",
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
}


def to_hf_config(config: ModelConfig) -> dict[str, Any]:
    """HF ``config.json`` dict for ``config`` (inverse of ``from_hf_config``)."""
    d: dict[str, Any] = {"architectures": [_ARCHITECTURES[config.model_type]]}
    d.update(config.hf_extra)
    for f in dataclasses.fields(config):
        if f.name in ("rope", "hf_extra", "qkv_bias", "o_bias", "qk_norm"):
            continue
        d[f.name] = getattr(config, f.name)
    d.update(_rope_to_hf(config.rope))
    if isinstance(config, DeepseekV3Config):
        d.update(
            scoring_func="sigmoid",
            topk_method="noaux_tc",
            num_key_value_heads=config.num_attention_heads,
        )
    else:
        if config.model_type == "llama":
            if config.qkv_bias != config.o_bias:
                raise ValueError("llama attention_bias covers q/k/v/o together")
            d["attention_bias"] = config.qkv_bias
        elif config.model_type == "qwen3":
            d["attention_bias"] = config.qkv_bias
        d.setdefault("use_sliding_window", False)
    d.setdefault("torch_dtype", "bfloat16")
    return d


def replace(config: ModelConfig, **changes: Any) -> ModelConfig:
    """``dataclasses.replace`` that keeps type checkers happy about the union."""
    return dataclasses.replace(config, **changes)
