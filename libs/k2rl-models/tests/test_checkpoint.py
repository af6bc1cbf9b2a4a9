"""HF safetensors I/O: sharding, FP8 block scales, tied embeddings, strictness, config.json."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from k2rl.models import (
    from_hf_config,
    get_preset,
    load_model,
    preset_names,
    save_model,
    to_hf_config,
)
from k2rl.models.checkpoint import INDEX_FILE, load_state_dict
from k2rl.models.fp8 import FP8_DTYPE, dequantize_fp8_blocks, quantize_fp8_blocks
from k2rl.models.testing import tiny_gqa, tiny_mla, tiny_model


def test_sharded_round_trip_is_bit_exact(tmp_path):
    model = tiny_model("mla")
    save_model(model, tmp_path, max_shard_bytes=20_000)
    index = json.loads((tmp_path / INDEX_FILE).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 3 and all((tmp_path / s).exists() for s in shards)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in model.state_dict().values()
    )

    loaded = load_model(tmp_path)
    assert loaded.config == model.config
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    ids = torch.randint(0, 96, (1, 10))
    torch.testing.assert_close(loaded(ids), model(ids), atol=0, rtol=0)


def test_tied_embeddings_are_saved_once_and_retied_on_load(tmp_path):
    model = tiny_model("gqa", tie_word_embeddings=True)
    save_model(model, tmp_path)
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    loaded = load_model(tmp_path)
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    assert torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def test_unknown_and_missing_tensors_are_errors_but_mtp_layers_are_skipped(tmp_path):
    model = tiny_model("mla")
    save_model(model, tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    # DeepSeek-V3 ships its multi-token-prediction module as layer num_hidden_layers
    weights["model.layers.3.eh_proj.weight"] = torch.zeros(2, 2)
    save_file(weights, tmp_path / "model.safetensors")
    load_model(tmp_path)

    save_file({**weights, "model.something_else": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(KeyError, match="unexpected"):
        load_model(tmp_path)
    del weights["model.norm.weight"]
    save_file(weights, tmp_path / "model.safetensors")
    with pytest.raises(KeyError, match="missing"):
        load_model(tmp_path)


def test_fp8_block_quantisation_round_trip():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(300, 200, generator=g) * torch.logspace(
        -3, 1, 200
    )  # very different column scales
    w[:128, :128] = 0.0  # an all-zero block must not divide by zero
    q, scale_inv = quantize_fp8_blocks(w)
    assert q.dtype == FP8_DTYPE and q.shape == w.shape
    assert scale_inv.shape == (3, 2) and scale_inv.dtype == torch.float32
    back = dequantize_fp8_blocks(q, scale_inv, dtype=torch.float32)
    # e4m3 keeps 3 mantissa bits: per element error <= 2^-4 relative, or the block's
    # subnormal step (2^-9 * scale) for tiny values
    step = scale_inv.repeat_interleave(128, 0)[:300].repeat_interleave(128, 1)[:, :200] * 2.0**-9
    assert torch.all((back - w).abs() <= w.abs() * 2.0**-4 + step)
    assert torch.equal(back[:128, :128], torch.zeros(128, 128))
    # values already on the fp8 grid survive a second round trip exactly
    q2, scale_inv2 = quantize_fp8_blocks(back)
    assert torch.equal(dequantize_fp8_blocks(q2, scale_inv2, dtype=torch.float32), back)


def test_fp8_dequantisation_uses_one_scale_per_128x128_block():
    q = torch.ones(130, 129).to(FP8_DTYPE)
    scale_inv = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    w = dequantize_fp8_blocks(q, scale_inv, dtype=torch.float32)
    assert w[127, 127] == 1 and w[127, 128] == 2 and w[128, 127] == 3 and w[129, 128] == 4
    with pytest.raises(ValueError):
        dequantize_fp8_blocks(q, torch.ones(1, 2))


def test_fp8_checkpoint_loads_dequantised(tmp_path):
    model = tiny_model("mla", hidden_size=160, q_lora_rank=136)  # weights span partial 128-blocks
    save_model(model, tmp_path, fp8=True, max_shard_bytes=30_000)  # scales land in other shards too
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"]["weight_block_size"] == [128, 128]
    raw = load_state_dict(tmp_path)  # the same reader dequantises
    assert raw["model.layers.1.self_attn.q_a_proj.weight"].dtype == torch.bfloat16
    index = json.loads((tmp_path / INDEX_FILE).read_text())["weight_map"]
    assert "model.layers.1.self_attn.q_a_proj.weight_scale_inv" in index
    assert "model.layers.1.mlp.gate.weight_scale_inv" not in index  # router stays high precision

    loaded = load_model(tmp_path, dtype=torch.float32)
    for name, original in model.state_dict().items():
        got = loaded.state_dict()[name]
        if name.startswith("model.layers.") and original.dim() == 2 and ".mlp.gate." not in name:
            q, s = quantize_fp8_blocks(original)
            expected = dequantize_fp8_blocks(q, s, dtype=torch.bfloat16).float()
            assert torch.equal(got, expected), name
            assert not torch.equal(got, original)
        else:
            assert torch.equal(got, original), name


def test_load_in_bf16_keeps_the_router_in_fp32(tmp_path):
    save_model(tiny_model("mla"), tmp_path, dtype=torch.bfloat16)
    model = load_model(tmp_path)  # "auto": the checkpoint's dtype
    assert model.lm_head.weight.dtype == torch.bfloat16
    moe = model.moe_modules()[0][1]
    assert (
        moe.gate.weight.dtype == torch.float32
        and moe.gate.e_score_correction_bias.dtype == torch.float32
    )
    assert model(torch.randint(0, 96, (1, 5))).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "config",
    [
        tiny_mla(),
        tiny_mla(q_lora_rank=None, n_group=4, topk_group=2),
        tiny_gqa(),
        *map(get_preset, preset_names()),
    ],
)
def test_config_round_trips_through_hf_json(config):
    d = json.loads(json.dumps(to_hf_config(config)))
    assert from_hf_config(d) == config


def test_kimi_k2_config_json_is_read():
    """Fields as in moonshotai/Kimi-K2-Instruct config.json (classic rope_scaling layout)."""
    d = {
        "architectures": ["DeepseekV3ForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"},
        "model_type": "kimi_k2",
        "vocab_size": 163840,
        "hidden_size": 7168,
        "intermediate_size": 18432,
        "moe_intermediate_size": 2048,
        "num_hidden_layers": 61,
        "num_nextn_predict_layers": 0,
        "num_attention_heads": 64,
        "num_key_value_heads": 64,
        "n_shared_experts": 1,
        "n_routed_experts": 384,
        "routed_scaling_factor": 2.827,
        "kv_lora_rank": 512,
        "q_lora_rank": 1536,
        "qk_rope_head_dim": 64,
        "v_head_dim": 128,
        "qk_nope_head_dim": 128,
        "topk_method": "noaux_tc",
        "n_group": 1,
        "topk_group": 1,
        "num_experts_per_tok": 8,
        "moe_layer_freq": 1,
        "first_k_dense_replace": 1,
        "norm_topk_prob": True,
        "scoring_func": "sigmoid",
        "hidden_act": "silu",
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-06,
        "rope_theta": 50000.0,
        "rope_scaling": {
            "beta_fast": 1.0,
            "beta_slow": 1.0,
            "factor": 32.0,
            "mscale": 1.0,
            "mscale_all_dim": 1.0,
            "original_max_position_embeddings": 4096,
            "type": "yarn",
        },
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "quantization_config": {
            "activation_scheme": "dynamic",
            "fmt": "e4m3",
            "quant_method": "fp8",
            "weight_block_size": [128, 128],
        },
        "bos_token_id": 163584,
        "eos_token_id": 163585,
    }
    config = from_hf_config(d)
    assert config == get_preset("kimi-k2")
    assert config.hf_extra["quantization_config"]["fmt"] == "e4m3"
    assert to_hf_config(config)["auto_map"] == d["auto_map"]
