"""The decoder skeleton shared by K2/DeepSeek-V3 and Llama/Qwen, with HF module names.

``CausalLM`` owns ``model`` (``embed_tokens``, ``layers``, ``norm``) and ``lm_head``, so
parameter names are exactly HF's. An architecture supplies its attention and MLP per layer
(``deepseek_v3.py``, ``llama.py``). The public forward API lives here:

* ``forward(input_ids, ...)`` -> logits [B, S, V] (training, packed, prefill, decode);
* ``token_logprobs(input_ids, targets, ...)`` -> [B, S] fp32, vocab-chunked;
* ``hidden_states`` / ``compute_logits`` for engines that want the last token only;
* max-logit helpers for QK-Clip and router-balancing helpers for MoE models.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from k2rl.models.attention import check_attention_backend
from k2rl.models.config import ModelConfig
from k2rl.models.context import ForwardContext, build_context
from k2rl.models.kv_cache import CacheSlots, KVCache, KVCacheSpec
from k2rl.models.logprobs import token_logprobs
from k2rl.models.moe import MoE, Router
from k2rl.models.norm import RMSNorm
from k2rl.models.recompute import checkpointed
from k2rl.models.rope import RotaryEmbedding


class DecoderLayer(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, self_attn: nn.Module, mlp: nn.Module, hidden_size: int, eps: float) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.mlp = mlp
        self.input_layernorm = RMSNorm(hidden_size, eps)
        self.post_attention_layernorm = RMSNorm(hidden_size, eps)

    def forward(self, hidden: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden = hidden + self.self_attn(self.input_layernorm(hidden), ctx)
        return hidden + self.mlp(self.post_attention_layernorm(hidden))


class DecoderModel(nn.Module):
    """HF ``model.``: token embeddings, decoder layers, final norm (+ the stateless RoPE)."""

    def __init__(
        self, config: ModelConfig, layers: list[DecoderLayer], rotary_emb: RotaryEmbedding
    ) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = rotary_emb
        # Recompute each layer's activations in backward instead of storing them.
        self.gradient_checkpointing = False

    def forward(self, input_ids: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        hidden = self.embed_tokens(input_ids)
        ctx.rope = self.rotary_emb(ctx.position_ids, hidden.dtype)
        checkpointing = self.gradient_checkpointing and torch.is_grad_enabled()
        for layer in self.layers:
            hidden = checkpointed(layer, hidden, ctx) if checkpointing else layer(hidden, ctx)
        return self.norm(hidden)


class CausalLM(nn.Module):
    """Base class of ``DeepseekV3ForCausalLM`` and ``LlamaForCausalLM``."""

    config: ModelConfig
    model: DecoderModel

    def __init__(self, config: ModelConfig, model: DecoderModel) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()
        self.init_weights()

    # --- weights --------------------------------------------------------------------------

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """HF-style init: N(0, initializer_range) for matrices, 1 for norms, 0 for biases."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Embedding | Router):
                module.weight.normal_(0.0, std, generator=generator)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
            if isinstance(module, Router):
                module.e_score_correction_bias.zero_()
            if isinstance(module, RMSNorm):
                module.weight.fill_(1.0)

    # --- forward --------------------------------------------------------------------------

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        *,
        attention_mask: torch.Tensor | None = None,
        document_ids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        cache_slots: CacheSlots | None = None,
    ) -> torch.Tensor:
        """Final-norm hidden states [B, S, hidden]; arguments as ``context.build_context``."""
        ctx = build_context(
            input_ids,
            position_ids,
            attention_mask=attention_mask,
            document_ids=document_ids,
            cu_seqlens=cu_seqlens,
            kv_cache=kv_cache,
            cache_slots=cache_slots,
        )
        return self.model(input_ids, ctx)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden)

    def forward(
        self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None, **kwargs: Any
    ) -> torch.Tensor:
        """Logits [B, S, vocab]. Keyword arguments as ``hidden_states``."""
        return self.compute_logits(self.hidden_states(input_ids, position_ids, **kwargs))

    def token_logprobs(
        self,
        input_ids: torch.Tensor,
        targets: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        *,
        temperature: float = 1.0,
        chunk_size: int = 1024,
        **kwargs: Any,
    ) -> torch.Tensor:
        """log p(targets[b, s] | input_ids[b, :s+1]) as fp32 [B, S]; targets -100 give 0.

        Targets are given explicitly (usually ``input_ids`` shifted left by one), so packed
        rows work: put -100 where a document ends.
        """
        hidden = self.hidden_states(input_ids, position_ids, **kwargs)
        return token_logprobs(
            hidden, self.lm_head.weight, targets, temperature=temperature, chunk_size=chunk_size
        )

    # --- KV cache -------------------------------------------------------------------------

    def kv_cache_spec(self) -> KVCacheSpec:
        raise NotImplementedError

    def allocate_kv_cache(
        self,
        num_slots: int,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        weight = self.lm_head.weight
        return KVCache.allocate(
            self.kv_cache_spec(),
            self.config.num_hidden_layers,
            num_slots,
            dtype or weight.dtype,
            device or weight.device,
        )

    # --- max logits (QK-Clip, K2 §2.1) ----------------------------------------------------

    def attention_modules(self) -> list[tuple[int, nn.Module]]:
        return [(i, layer.self_attn) for i, layer in enumerate(self.model.layers)]

    def set_track_max_logits(self, enabled: bool) -> None:
        for _, attn in self.attention_modules():
            attn.track_max_logits = enabled

    def reset_max_logits(self) -> None:
        for _, attn in self.attention_modules():
            attn.reset_max_logits()

    def set_attention_backend(self, backend: str) -> None:
        """One of ``attention.ATTENTION_BACKENDS`` (default "auto") for every layer."""
        check_attention_backend(backend)
        for _, attn in self.attention_modules():
            attn.attention_backend = backend

    def max_logits(self) -> dict[int, torch.Tensor]:
        """Layer index -> running per-head max logit [num_heads], for layers that recorded one."""
        return {
            i: attn.max_logits
            for i, attn in self.attention_modules()
            if attn.max_logits is not None
        }

    # --- MoE load balancing (DeepSeek-V3 aux-loss-free, kept by K2) -----------------------

    def moe_modules(self) -> list[tuple[int, MoE]]:
        return [
            (i, layer.mlp)
            for i, layer in enumerate(self.model.layers)
            if isinstance(layer.mlp, MoE)
        ]

    def expert_loads(self) -> dict[int, torch.Tensor]:
        """Layer index -> tokens routed to each expert since the last update/reset (int64 [E])."""
        return {i: moe.expert_load for i, moe in self.moe_modules() if moe.expert_load is not None}

    def reset_expert_loads(self) -> None:
        for _, moe in self.moe_modules():
            moe.reset_expert_load()

    def update_router_biases(
        self, rate: float, loads: dict[int, torch.Tensor] | None = None
    ) -> None:
        """One balancing step on every MoE layer (under data parallelism pass all-reduced loads)."""
        for i, moe in self.moe_modules():
            moe.update_router_bias(rate, None if loads is None else loads.get(i))
