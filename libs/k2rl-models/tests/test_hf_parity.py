"""Same weights, same logits as HF transformers' own implementations (fp32).

Weights travel through the checkpoint files in both directions: HF ``save_pretrained`` ->
our loader, and our ``save_model`` -> HF ``from_pretrained``.
"""

from __future__ import annotations

import pytest
import torch

from k2rl.models import load_model, save_model

transformers = pytest.importorskip("transformers")

ATOL = 2e-5

YARN_HF = {
    "rope_type": "yarn",
    "factor": 4.0,
    "original_max_position_embeddings": 32,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 0.707,
    "mscale_all_dim": 1.0,
    "rope_theta": 10000.0,
}


def _deepseek_hf(q_lora_rank, rope_interleave, rope, n_group, tie):
    config = transformers.DeepseekV3Config(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        moe_intermediate_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        n_shared_experts=1,
        n_routed_experts=8,
        kv_lora_rank=16,
        q_lora_rank=q_lora_rank,
        qk_rope_head_dim=8,
        v_head_dim=12,
        qk_nope_head_dim=16,
        n_group=n_group,
        topk_group=min(2, n_group),
        num_experts_per_tok=3,
        first_k_dense_replace=1,
        max_position_embeddings=128,
        initializer_range=0.2,
        rope_interleave=rope_interleave,
        routed_scaling_factor=2.5,
        tie_word_embeddings=tie,
        attn_implementation="eager",
        **({"rope_parameters": dict(rope)} if rope else {}),
    )
    torch.manual_seed(0)
    model = transformers.DeepseekV3ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers[config.first_k_dense_replace :]:
            layer.mlp.gate.e_score_correction_bias.normal_(0, 0.1)
    return model


def _compare(hf_model, tmp_path, input_ids, *, sensitivity=None):
    hf_model.save_pretrained(tmp_path / "hf")
    ours = load_model(tmp_path / "hf").eval()
    with torch.no_grad():
        expected = hf_model(input_ids).logits
        got = ours(input_ids)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)

    save_model(ours, tmp_path / "ours")
    reloaded = type(hf_model).from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids).logits, expected, atol=ATOL, rtol=0)
    return ours


@pytest.mark.parametrize(
    "q_lora_rank,rope_interleave,rope,n_group,tie",
    [
        (24, True, YARN_HF, 1, False),  # the K2 shape: q_lora, no expert grouping
        (None, True, None, 4, False),  # plain q_proj, DeepSeek-V3 grouped routing
        (24, False, YARN_HF, 2, True),  # half-split rope layout, tied embeddings
    ],
)
def test_deepseek_v3_logits_match_transformers(
    tmp_path, q_lora_rank, rope_interleave, rope, n_group, tie
):
    hf_model = _deepseek_hf(q_lora_rank, rope_interleave, rope, n_group, tie)
    input_ids = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))
    ours = _compare(hf_model, tmp_path, input_ids)

    # The comparison is sensitive to the rope layout: flipping it must change the logits.
    for _, attn in ours.attention_modules():
        attn.rope_interleave = not rope_interleave
    with torch.no_grad():
        assert (ours(input_ids) - hf_model(input_ids).logits).abs().max() > 1e-3


GQA_CASES = {
    "llama3-rope-bias": (
        "LlamaConfig",
        "LlamaForCausalLM",
        dict(
            attention_bias=True,
            mlp_bias=True,
            rope_parameters={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16,
                "rope_theta": 500000.0,
            },
        ),
    ),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", dict(tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(tie_word_embeddings=False)),
    "qwen3-yarn": (
        "Qwen3Config",
        "Qwen3ForCausalLM",
        dict(
            tie_word_embeddings=True,
            rope_parameters={**YARN_HF, "mscale": None, "mscale_all_dim": None},
        ),
    ),
}


@pytest.mark.parametrize("case", sorted(GQA_CASES))
def test_gqa_logits_match_transformers(tmp_path, case):
    config_cls, model_cls, extra = GQA_CASES[case]
    config = getattr(transformers, config_cls)(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=128,
        initializer_range=0.2,
        attn_implementation="eager",
        **extra,
    )
    torch.manual_seed(0)
    hf_model = getattr(transformers, model_cls)(config).eval()
    with torch.no_grad():  # HF inits biases to 0 and norms to 1; make them matter
        for name, p in hf_model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0, 0.1)
            elif "norm" in name:
                p.normal_(1.0, 0.1)
    input_ids = torch.randint(0, 96, (2, 24), generator=torch.Generator().manual_seed(1))
    _compare(hf_model, tmp_path, input_ids)
