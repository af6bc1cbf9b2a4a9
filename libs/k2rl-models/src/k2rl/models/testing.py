"""Tiny configs and helpers for tests here and in other packages (e.g. k2rl.optim).

Small enough for fp32 CPU tests in milliseconds, yet every structural feature is present:
q_lora, YaRN with an mscale correction, a dense layer followed by MoE layers, a shared
expert, GQA with q/k norms.
"""

from __future__ import annotations

import torch

from k2rl.models.config import DeepseekV3Config, LlamaConfig, RopeConfig

YARN = RopeConfig(
    theta=10000.0,
    type="yarn",
    factor=4.0,
    original_max_position_embeddings=32,
    mscale=0.707,
    mscale_all_dim=1.0,
)


def tiny_mla(**changes) -> DeepseekV3Config:
    base = dict(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        q_lora_rank=24,
        kv_lora_rank=16,
        qk_nope_head_dim=16,
        qk_rope_head_dim=8,
        v_head_dim=12,
        n_routed_experts=8,
        n_shared_experts=1,
        num_experts_per_tok=2,
        n_group=1,
        topk_group=1,
        routed_scaling_factor=2.5,
        first_k_dense_replace=1,
        max_position_embeddings=128,
        initializer_range=0.2,
        rope=YARN,
    )
    base.update(changes)
    return DeepseekV3Config(**base)


def tiny_gqa(**changes) -> LlamaConfig:
    base = dict(
        model_type="qwen3",
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        qk_norm=True,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    base.update(changes)
    return LlamaConfig(**base)


def randomise_router_biases(model, std: float = 0.1, seed: int = 0) -> None:
    """Non-zero e_score_correction_bias so tests see selection-by-biased-score."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, moe in model.moe_modules():
            bias = moe.gate.e_score_correction_bias
            bias.copy_(torch.randn(bias.shape, generator=g) * std)


def tiny_model(kind: str = "mla", *, seed: int = 0, **changes):
    """A built fp32 tiny model ("mla" or "gqa") in eval mode, router biases randomised."""
    from k2rl.models.loading import build_model

    config = tiny_mla(**changes) if kind == "mla" else tiny_gqa(**changes)
    model = build_model(config, seed=seed).eval()
    randomise_router_biases(model, seed=seed)
    return model
