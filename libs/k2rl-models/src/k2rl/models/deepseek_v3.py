"""Kimi K2 / DeepSeek-V3: Multi-head Latent Attention + MoE (K2 report §2.3, Table 2).

HF ``DeepseekV3ForCausalLM`` parameter names and row layouts, which QK-Clip relies on:
* ``q_proj`` / ``q_b_proj`` rows: per head h, [qk_nope_head_dim | qk_rope_head_dim];
* ``kv_b_proj`` rows: per head h, [qk_nope_head_dim (k_nope) | v_head_dim (v)];
* ``kv_a_proj_with_mqa`` rows: [kv_lora_rank (latent) | qk_rope_head_dim (shared k_rope)].

Attention has two equivalent evaluation orders. *Expanded* (training, prefill): the latent
is up-projected by ``kv_b_proj`` into per-head K_nope and V. *Absorbed* (decode from the
cache): W_UK is folded into the query and W_UV applied after the softmax, so the cached
latent is never expanded (DeepSeek-V2 §2.1.2). Both give the same logits, hence the same
max logit. The expanded form runs on the module's ``attention_backend``; the absorbed one
(a few query rows per sequence) always computes its logits eagerly.
"""

from __future__ import annotations

import torch
from torch import nn

from k2rl.models.attention import MaxLogitTracker, dot_product_attention, masked_softmax
from k2rl.models.config import DeepseekV3Config
from k2rl.models.context import AttentionMask, ForwardContext
from k2rl.models.kv_cache import KVCacheSpec
from k2rl.models.mlp import GatedMLP
from k2rl.models.moe import MoE
from k2rl.models.norm import RMSNorm
from k2rl.models.rope import RotaryEmbedding, apply_rotary, yarn_softmax_scale
from k2rl.models.transformer import CausalLM, DecoderLayer, DecoderModel

# Use the absorbed form when a forward brings at most this many new tokens per row and
# reads from a cache; beyond it, expanding the latent once is cheaper.
ABSORB_MAX_QUERY_LEN = 8


class MLAttention(nn.Module, MaxLogitTracker):
    def __init__(self, config: DeepseekV3Config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.q_lora_rank = config.q_lora_rank
        self.kv_lora_rank = config.kv_lora_rank
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.v_head_dim = config.v_head_dim
        self.qk_head_dim = config.qk_head_dim
        self.rope_interleave = config.rope_interleave
        self.softmax_scale = yarn_softmax_scale(config.rope, self.qk_head_dim)
        hidden, bias = config.hidden_size, config.attention_bias

        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(hidden, self.num_heads * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(hidden, self.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(self.q_lora_rank)
            self.q_b_proj = nn.Linear(
                self.q_lora_rank, self.num_heads * self.qk_head_dim, bias=False
            )
        self.kv_a_proj_with_mqa = nn.Linear(
            hidden, self.kv_lora_rank + self.qk_rope_head_dim, bias=bias
        )
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank)
        self.kv_b_proj = nn.Linear(
            self.kv_lora_rank,
            self.num_heads * (self.qk_nope_head_dim + self.v_head_dim),
            bias=False,
        )
        self.o_proj = nn.Linear(self.num_heads * self.v_head_dim, hidden, bias=bias)
        self._init_max_logit_tracking()

    def forward(self, x: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        batch, seq_len, _ = x.shape
        if self.q_lora_rank is None:
            q = self.q_proj(x)
        else:
            q = self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(batch, seq_len, self.num_heads, self.qk_head_dim)
        q_nope, q_rope = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)

        latent, k_rope = self.kv_a_proj_with_mqa(x).split(
            [self.kv_lora_rank, self.qk_rope_head_dim], dim=-1
        )
        latent = self.kv_a_layernorm(latent)
        assert ctx.rope is not None
        cos, sin = ctx.rope
        q_rope = apply_rotary(q_rope, cos, sin, interleaved=self.rope_interleave)
        k_rope = apply_rotary(k_rope[:, :, None, :], cos, sin, interleaved=self.rope_interleave)
        k_rope = k_rope[:, :, 0]  # one rotary key shared by all heads

        absorbed = False
        if ctx.kv_cache is not None:
            assert ctx.slots is not None
            ctx.kv_cache.write(self.layer_idx, ctx.slots.write, latent=latent, k_rope=k_rope)
            cached = ctx.kv_cache.read(self.layer_idx, ctx.slots.read)
            latent, k_rope = cached["latent"].to(x.dtype), cached["k_rope"].to(x.dtype)
            absorbed = seq_len <= ABSORB_MAX_QUERY_LEN
        attend = self._attend_absorbed if absorbed else self._attend_expanded
        out, head_max = attend(q_nope, q_rope, latent, k_rope, ctx.mask)
        if self.track_max_logits:
            self._record_max_logits(head_max)
        return self.o_proj(out.reshape(batch, seq_len, self.num_heads * self.v_head_dim))

    def _attend_expanded(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        mask: AttentionMask,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Up-project the latent [B, L, r] to per-head K/V and run ordinary attention."""
        batch, k_len, _ = latent.shape
        kv = self.kv_b_proj(latent).view(
            batch, k_len, self.num_heads, self.qk_nope_head_dim + self.v_head_dim
        )
        k_nope, value = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        key = torch.cat((k_nope, k_rope[:, :, None, :].expand(-1, -1, self.num_heads, -1)), dim=-1)
        query = torch.cat((q_nope, q_rope), dim=-1)
        out, head_max = dot_product_attention(
            query.transpose(1, 2),
            key.transpose(1, 2),
            value.transpose(1, 2),
            mask,
            self.softmax_scale,
            track_max=self.track_max_logits,
            backend=self.attention_backend,
        )
        return out.transpose(1, 2), head_max  # [B, S, H, Dv]

    def _attend_absorbed(
        self,
        q_nope: torch.Tensor,
        q_rope: torch.Tensor,
        latent: torch.Tensor,
        k_rope: torch.Tensor,
        mask: AttentionMask,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attend over the latent directly: q_nope W_UK^T . c_j + q_rope . k_rope_j."""
        w = self.kv_b_proj.weight.view(
            self.num_heads, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank
        )
        w_uk, w_uv = w[:, : self.qk_nope_head_dim], w[:, self.qk_nope_head_dim :]
        q_latent = torch.einsum("bshd,hdr->bhsr", q_nope, w_uk)
        logits = torch.einsum("bhsr,blr->bhsl", q_latent, latent)
        logits = logits + torch.einsum("bshd,bld->bhsl", q_rope, k_rope)
        probs, head_max = masked_softmax(
            logits * self.softmax_scale, mask, latent.dtype, track_max=self.track_max_logits
        )
        out_latent = torch.einsum("bhsl,blr->bhsr", probs, latent)
        return torch.einsum("bhsr,hvr->bshv", out_latent, w_uv), head_max


def _decoder_layer(config: DeepseekV3Config, layer_idx: int) -> DecoderLayer:
    mlp: nn.Module
    if config.is_moe_layer(layer_idx):
        mlp = MoE(config)
    else:
        mlp = GatedMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
    return DecoderLayer(
        MLAttention(config, layer_idx), mlp, config.hidden_size, config.rms_norm_eps
    )


class DeepseekV3ForCausalLM(CausalLM):
    config: DeepseekV3Config

    def __init__(self, config: DeepseekV3Config) -> None:
        model = DecoderModel(
            config,
            [_decoder_layer(config, i) for i in range(config.num_hidden_layers)],
            RotaryEmbedding(config.rope, config.qk_rope_head_dim, config.max_position_embeddings),
        )
        super().__init__(config, model)

    def kv_cache_spec(self) -> KVCacheSpec:
        return {"latent": (self.config.kv_lora_rank,), "k_rope": (self.config.qk_rope_head_dim,)}
