"""Parameter counts from a config alone (no model built): total and activated per token.

"Activated" counts what one token touches: embeddings, attention, dense MLPs, the shared
experts and ``num_experts_per_tok`` routed experts per MoE layer, and the LM head; this
reproduces DeepSeek-V3's 671B / 37B and K2's 32.6B activated (K2 report Table 2).
"""

from __future__ import annotations

from dataclasses import dataclass

from k2rl.models.config import DeepseekV3Config, LlamaConfig, ModelConfig


@dataclass(frozen=True)
class ParameterCounts:
    total: int
    activated: int


def _mla_params(c: DeepseekV3Config) -> int:
    h, bias = c.hidden_size, int(c.attention_bias)
    if c.q_lora_rank is None:
        q = h * c.num_attention_heads * c.qk_head_dim
    else:
        q = (
            h * c.q_lora_rank
            + bias * c.q_lora_rank
            + c.q_lora_rank
            + c.q_lora_rank * c.num_attention_heads * c.qk_head_dim
        )
    kv_a = h * (c.kv_lora_rank + c.qk_rope_head_dim) + bias * (c.kv_lora_rank + c.qk_rope_head_dim)
    kv_b = c.kv_lora_rank + c.kv_lora_rank * c.num_attention_heads * (
        c.qk_nope_head_dim + c.v_head_dim
    )
    o = c.num_attention_heads * c.v_head_dim * h + bias * h
    return q + kv_a + kv_b + o


def _gqa_params(c: LlamaConfig) -> int:
    h, q_out, kv_out = (
        c.hidden_size,
        c.num_attention_heads * c.head_dim,
        c.num_key_value_heads * c.head_dim,
    )
    weights = h * q_out + 2 * h * kv_out + q_out * h
    biases = int(c.qkv_bias) * (q_out + 2 * kv_out) + int(c.o_bias) * h
    return weights + biases + (2 * c.head_dim if c.qk_norm else 0)


def parameter_counts(config: ModelConfig) -> ParameterCounts:
    h = config.hidden_size
    embed = config.vocab_size * h
    head = 0 if config.tie_word_embeddings else config.vocab_size * h
    total = activated = embed + head + h  # + final norm
    for layer in range(config.num_hidden_layers):
        norms = 2 * h
        if isinstance(config, DeepseekV3Config):
            attn = _mla_params(config)
            if config.is_moe_layer(layer):
                expert = 3 * h * config.moe_intermediate_size
                router = config.n_routed_experts * h  # the correction bias is a buffer
                shared = config.n_shared_experts * expert
                layer_total = router + config.n_routed_experts * expert + shared
                layer_active = router + config.num_experts_per_tok * expert + shared
            else:
                layer_total = layer_active = 3 * h * config.intermediate_size
        else:
            attn = _gqa_params(config)
            mlp_bias = 2 * config.intermediate_size + h if config.mlp_bias else 0
            layer_total = layer_active = 3 * h * config.intermediate_size + mlp_bias
        total += norms + attn + layer_total
        activated += norms + attn + layer_active
    return ParameterCounts(total=total, activated=activated)
