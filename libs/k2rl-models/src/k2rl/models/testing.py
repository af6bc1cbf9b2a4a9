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


def train_bpe_ranks(texts, num_merges: int, pat_str: str) -> dict[bytes, int]:
    """Byte-level BPE ranks as tiktoken expects them: the 256 bytes, then one token per merge
    (most frequent adjacent pair within pre-tokenised pieces, ties broken by first seen).

    ``pat_str`` is compiled with the ``regex`` package in V1 mode (class set operations).
    """
    import collections

    import regex

    splitter = regex.compile(pat_str, flags=regex.V1)
    words = collections.Counter(
        tuple(bytes([b]) for b in piece.encode("utf-8")) for text in texts for piece in splitter.findall(text)
    )
    ranks = {bytes([b]): b for b in range(256)}
    for _ in range(num_merges):
        pairs: collections.Counter[tuple[bytes, bytes]] = collections.Counter()
        for word, count in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += count
        if not pairs:
            break
        best = max(pairs, key=pairs.__getitem__)
        merged = best[0] + best[1]
        ranks[merged] = len(ranks)
        words = collections.Counter({_merge_pair(word, best, merged): count for word, count in words.items()})
    return ranks


def _merge_pair(word: tuple[bytes, ...], pair: tuple[bytes, bytes], merged: bytes) -> tuple[bytes, ...]:
    out: list[bytes] = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
            out.append(merged)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return tuple(out)


def write_kimi_tokenizer_dir(path, texts, num_merges: int = 200) -> dict[bytes, int]:
    """A Kimi-K2-layout tokenizer directory trained on ``texts``: ``tiktoken.model`` plus a
    ``tokenizer_config.json`` naming [BOS], [EOS], [UNK], [PAD] and K2's chat and tool-call
    tokens in the reserved block (as the released config does), with K2's chat template."""
    import json
    from pathlib import Path

    from k2rl.models.chat import K2_CHAT_TEMPLATE, K2_CHAT_TOKENS
    from k2rl.models.tiktoken_bpe import KIMI_PAT_STR, write_bpe_ranks

    path = Path(path)
    ranks = train_bpe_ranks(texts, num_merges, KIMI_PAT_STR)
    write_bpe_ranks(path / "tiktoken.model", ranks)
    names = ["[BOS]", "[EOS]", "[UNK]", "[PAD]", *K2_CHAT_TOKENS]
    base = len(ranks)
    # A gap after the first four, as in the released config: unnamed ids stay reserved.
    ids = [base, base + 1, base + 2, base + 3, *range(base + 10, base + 10 + len(K2_CHAT_TOKENS))]
    config = {
        "tokenizer_class": "TikTokenTokenizer",
        "bos_token": "[BOS]",
        "eos_token": {"content": "[EOS]", "special": True},
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "added_tokens_decoder": {str(i): {"content": name, "special": True} for i, name in zip(ids, names, strict=True)},
        "additional_special_tokens": list(K2_CHAT_TOKENS),
        "chat_template": K2_CHAT_TEMPLATE,
    }
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=1))
    return ranks
