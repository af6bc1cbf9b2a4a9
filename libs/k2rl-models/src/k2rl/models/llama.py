"""Dense grouped-query attention decoder: Llama, Qwen2 (q/k/v bias), Qwen3 (q_norm/k_norm).

HF ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` / ``Qwen3ForCausalLM`` parameter names.
``q_proj`` rows are per query head [head_dim], ``k_proj``/``v_proj`` rows per key-value
head; query head h shares key-value head h // (num_heads / num_key_value_heads).
"""

from __future__ import annotations

import torch
from torch import nn

from k2rl.models.attention import MaxLogitTracker, dot_product_attention
from k2rl.models.config import LlamaConfig
from k2rl.models.context import ForwardContext
from k2rl.models.kv_cache import KVCacheSpec
from k2rl.models.mlp import GatedMLP
from k2rl.models.norm import RMSNorm
from k2rl.models.rope import RotaryEmbedding, apply_rotary
from k2rl.models.transformer import CausalLM, DecoderLayer, DecoderModel


class GQAttention(nn.Module, MaxLogitTracker):
    def __init__(self, config: LlamaConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.softmax_scale = self.head_dim**-0.5
        hidden = config.hidden_size
        self.q_proj = nn.Linear(hidden, self.num_heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(
            hidden, self.num_key_value_heads * self.head_dim, bias=config.qkv_bias
        )
        self.v_proj = nn.Linear(
            hidden, self.num_key_value_heads * self.head_dim, bias=config.qkv_bias
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, hidden, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.qk_norm = config.qk_norm
        self._init_max_logit_tracking()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        q = self.q_proj(x).view(batch, seq_len, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq_len, self.num_key_value_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq_len, self.num_key_value_heads, self.head_dim)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        assert ctx.rope is not None
        cos, sin = ctx.rope
        q = apply_rotary(q, cos, sin, interleaved=False)
        k = apply_rotary(k, cos, sin, interleaved=False)

        if ctx.kv_cache is not None:
            assert ctx.slots is not None
            ctx.kv_cache.write(self.layer_idx, ctx.slots.write, k=k, v=v)
            cached = ctx.kv_cache.read(self.layer_idx, ctx.slots.read)
            k, v = cached["k"].to(x.dtype), cached["v"].to(x.dtype)

        out, head_max = dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            ctx.mask,
            self.softmax_scale,
            track_max=self.track_max_logits,
            backend=self.attention_backend,
        )
        if self.track_max_logits:
            self._record_max_logits(head_max)
        return self.o_proj(
            out.transpose(1, 2).reshape(batch, seq_len, self.num_heads * self.head_dim)
        )


def _decoder_layer(config: LlamaConfig, layer_idx: int) -> DecoderLayer:
    mlp = GatedMLP(
        config.hidden_size, config.intermediate_size, config.hidden_act, bias=config.mlp_bias
    )
    return DecoderLayer(
        GQAttention(config, layer_idx), mlp, config.hidden_size, config.rms_norm_eps
    )


class LlamaForCausalLM(CausalLM):
    config: LlamaConfig

    def __init__(self, config: LlamaConfig) -> None:
        model = DecoderModel(
            config,
            [_decoder_layer(config, i) for i in range(config.num_hidden_layers)],
            RotaryEmbedding(config.rope, config.head_dim, config.max_position_embeddings),
        )
        super().__init__(config, model)

    def kv_cache_spec(self) -> KVCacheSpec:
        shape = (self.config.num_key_value_heads, self.config.head_dim)
        return {"k": shape, "v": shape}
