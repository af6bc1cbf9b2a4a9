"""k2rl model library: Kimi K2 / DeepSeek-V3 (MLA + MoE) and dense GQA (Llama / Qwen).

Parameter names, shapes and checkpoint files follow HF transformers, so real checkpoints
load without conversion and our checkpoints load in transformers / vLLM.
"""

from k2rl.models.config import (
    DeepseekV3Config,
    LlamaConfig,
    ModelConfig,
    RopeConfig,
    from_hf_config,
    load_hf_config,
    to_hf_config,
)
from k2rl.models.deepseek_v3 import DeepseekV3ForCausalLM, MLAttention
from k2rl.models.kv_cache import CacheSlots, KVCache
from k2rl.models.llama import GQAttention, LlamaForCausalLM
from k2rl.models.loading import build_model, cast_model, load_model, model_class, save_model
from k2rl.models.presets import get_preset, preset_names
from k2rl.models.sizing import parameter_counts
from k2rl.models.transformer import CausalLM

__all__ = [
    "CacheSlots",
    "CausalLM",
    "DeepseekV3Config",
    "DeepseekV3ForCausalLM",
    "GQAttention",
    "KVCache",
    "LlamaConfig",
    "LlamaForCausalLM",
    "MLAttention",
    "ModelConfig",
    "RopeConfig",
    "build_model",
    "cast_model",
    "from_hf_config",
    "get_preset",
    "load_hf_config",
    "load_model",
    "model_class",
    "parameter_counts",
    "preset_names",
    "save_model",
    "to_hf_config",
]
