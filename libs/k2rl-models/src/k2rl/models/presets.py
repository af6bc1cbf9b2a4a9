"""Named model configs.

* ``k2-nano``: the K2 shape scaled down (MLA with q_lora, 1 dense layer then MoE layers,
  sigmoid router without grouping, 1 shared expert, K2's routed scaling factor); about
  6M parameters, trains on 2 CPU cores in minutes. Byte-level vocabulary.
* ``k2-micro``: the same shape with tens of millions of parameters.
* ``llama-nano``: a dense GQA model of similar size, for dense-model code paths.
* ``kimi-k2`` / ``deepseek-v3``: the full-size configs (K2 report Table 2; the released
  config.json files). Build them on the meta device only: they are for shape checks.
"""

from __future__ import annotations

from k2rl.models.config import DeepseekV3Config, LlamaConfig, ModelConfig, RopeConfig

# Byte tokenizer: 256 byte ids + specials, padded to a multiple of 64.
BYTE_VOCAB_SIZE = 512
K2_ROUTED_SCALING_FACTOR = 2.827

_PRESETS: dict[str, ModelConfig] = {
    "k2-nano": DeepseekV3Config(
        model_type="kimi_k2",
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=768,
        moe_intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        q_lora_rank=96,
        kv_lora_rank=64,
        qk_nope_head_dim=32,
        qk_rope_head_dim=16,
        v_head_dim=32,
        n_routed_experts=16,
        n_shared_experts=1,
        num_experts_per_tok=2,
        routed_scaling_factor=K2_ROUTED_SCALING_FACTOR,
        first_k_dense_replace=1,
        max_position_embeddings=2048,
        rope=RopeConfig(theta=50000.0),
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    ),
    "k2-micro": DeepseekV3Config(
        model_type="kimi_k2",
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=512,
        intermediate_size=1536,
        moe_intermediate_size=128,
        num_hidden_layers=8,
        num_attention_heads=8,
        q_lora_rank=192,
        kv_lora_rank=128,
        qk_nope_head_dim=64,
        qk_rope_head_dim=32,
        v_head_dim=64,
        n_routed_experts=32,
        n_shared_experts=1,
        num_experts_per_tok=4,
        routed_scaling_factor=K2_ROUTED_SCALING_FACTOR,
        first_k_dense_replace=1,
        max_position_embeddings=4096,
        rope=RopeConfig(theta=50000.0),
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    ),
    "llama-nano": LlamaConfig(
        model_type="llama",
        vocab_size=BYTE_VOCAB_SIZE,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=2048,
        rope=RopeConfig(theta=500000.0),
        tie_word_embeddings=True,
        bos_token_id=256,
        eos_token_id=257,
        pad_token_id=258,
    ),
    # Kimi-K2 as released (config.json of moonshotai/Kimi-K2-Instruct; K2 report Table 2).
    "kimi-k2": DeepseekV3Config(
        model_type="kimi_k2",
        vocab_size=163840,
        hidden_size=7168,
        intermediate_size=18432,
        moe_intermediate_size=2048,
        num_hidden_layers=61,
        num_attention_heads=64,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=384,
        n_shared_experts=1,
        num_experts_per_tok=8,
        n_group=1,
        topk_group=1,
        routed_scaling_factor=K2_ROUTED_SCALING_FACTOR,
        first_k_dense_replace=1,
        max_position_embeddings=131072,
        rope=RopeConfig(
            theta=50000.0,
            type="yarn",
            factor=32.0,
            original_max_position_embeddings=4096,
            beta_fast=1.0,
            beta_slow=1.0,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
        bos_token_id=163584,
        eos_token_id=163585,
    ),
    "deepseek-v3": DeepseekV3Config(
        model_type="deepseek_v3",
        vocab_size=129280,
        hidden_size=7168,
        intermediate_size=18432,
        moe_intermediate_size=2048,
        num_hidden_layers=61,
        num_attention_heads=128,
        q_lora_rank=1536,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=256,
        n_shared_experts=1,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
        routed_scaling_factor=2.5,
        first_k_dense_replace=3,
        max_position_embeddings=163840,
        rope=RopeConfig(
            theta=10000.0,
            type="yarn",
            factor=40.0,
            original_max_position_embeddings=4096,
            beta_fast=32.0,
            beta_slow=1.0,
            mscale=1.0,
            mscale_all_dim=1.0,
        ),
        bos_token_id=0,
        eos_token_id=1,
    ),
}


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> ModelConfig:
    try:
        return _PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(preset_names())}") from None
