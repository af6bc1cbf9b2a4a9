"""The flex_attention backend against the eager path it replaces on CUDA.

torch runs flex_attention on CPU only unfused, forward only, and refuses to return max
scores there, so the CPU tests check what the fused CUDA path is built from: the
BlockMask admits exactly the pairs of ``AttentionMask.allowed``; flex outputs equal eager
outputs for MLA- and GQA-shaped inputs, packed and padded; and the row maxima of torch's
reference flex implementation reduce to the eager path's per-head max. The last test
runs the compiled path itself and needs CUDA.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch._higher_order_ops.flex_attention import flex_attention as flex_attention_op
from torch.nn.attention.flex_attention import BlockMask, create_mask

from k2rl.models import CacheSlots, load_model
from k2rl.models.attention import (
    dot_product_attention,
    eager_dot_product_attention,
    resolve_attention_backend,
)
from k2rl.models.context import AttentionMask, build_context, cached_mask
from k2rl.models.flex import block_mask, flex_dot_product_attention, mask_mod

# On CPU flex_attention is unfused on purpose here; torch warns about that once.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

SEQ = 300  # more than two of flex's 128-token blocks: full, partial and skipped blocks


def _ids(device: str) -> torch.Tensor:
    return torch.zeros(2, SEQ, dtype=torch.long, device=device)


def _causal(device: str = "cpu") -> AttentionMask:
    return build_context(_ids(device)).mask


def _packed_document_ids() -> torch.Tensor:
    """Documents crossing block boundaries: row 0 [130, 100, 70], row 1 [260, 40]."""
    lengths = ([130, 100, 70], [260, 40])
    return torch.stack(
        [torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row)) for row in lengths]
    )


def _packed(device: str = "cpu") -> AttentionMask:
    return build_context(_ids(device), document_ids=_packed_document_ids().to(device)).mask


def _padded(device: str = "cpu") -> AttentionMask:
    """Row 0 right-padded after 200 tokens, row 1 left-padded by 50 (HF attention_mask)."""
    attention_mask = torch.ones(2, SEQ, dtype=torch.long)
    attention_mask[0, 200:] = 0
    attention_mask[1, :50] = 0
    return build_context(_ids(device), attention_mask=attention_mask.to(device)).mask


def _cached(device: str = "cpu") -> AttentionMask:
    """Decode-like: 3 new tokens on 150 cached, and 1 new (2 padding rows) on 20 cached."""
    positions, slots = CacheSlots.contiguous([150, 20], [3, 1], max_len=SEQ, device=device)
    return cached_mask(positions, slots)


MASKS = {"causal": _causal, "packed": _packed, "padded": _padded, "cached": _cached}


def _dense_blocks(num_blocks: torch.Tensor, indices: torch.Tensor, k_blocks: int) -> torch.Tensor:
    """BlockMask's per-row (count, column indices) lists as a bool [B, H, Q blocks, K blocks]."""
    dense = torch.zeros(*num_blocks.shape, k_blocks, dtype=torch.bool)
    for row in torch.cartesian_prod(*[torch.arange(n) for n in num_blocks.shape]):
        b, h, qb = row.tolist()
        dense[b, h, qb, indices[b, h, qb, : num_blocks[b, h, qb]]] = True
    return dense


def _pairs_admitted(bm: BlockMask, allowed: torch.Tensor) -> torch.Tensor:
    """Pairs flex_attention attends: all of a full block, the mask_mod's pairs of a partial one."""
    q_len, k_len = allowed.shape[-2:]
    q_block, k_block = bm.BLOCK_SIZE
    k_blocks = bm.kv_indices.shape[-1]
    assert bm.full_kv_num_blocks is not None and bm.full_kv_indices is not None
    full = _dense_blocks(bm.full_kv_num_blocks, bm.full_kv_indices, k_blocks)
    partial = _dense_blocks(bm.kv_num_blocks, bm.kv_indices, k_blocks)

    def to_pairs(blocks: torch.Tensor) -> torch.Tensor:
        pairs = blocks.repeat_interleave(q_block, dim=-2).repeat_interleave(k_block, dim=-1)
        return pairs[..., :q_len, :k_len]

    return to_pairs(full) | (to_pairs(partial) & allowed)


@pytest.mark.parametrize("name", sorted(MASKS))
def test_mask_mod_and_block_mask_admit_exactly_the_allowed_pairs(name):
    mask = MASKS[name]()
    batch, _, q_len, k_len = mask.allowed.shape
    from_mask_mod = create_mask(mask_mod(mask), batch, None, q_len, k_len, device="cpu")
    assert torch.equal(from_mask_mod, mask.allowed)
    assert not bool(mask.allowed.all())  # the mask really masks something

    bm = block_mask(mask)
    assert bm.shape == (batch, 1, q_len, k_len)
    assert torch.equal(_pairs_admitted(bm, mask.allowed), mask.allowed)
    assert block_mask(mask) is bm  # built once per mask, shared by the layers


def _qkv(shape: str, q_len: int, k_len: int, seed: int = 0):
    """MLA-shaped (q/k dim 48 != v dim 32, as k2-nano) or GQA-shaped (8 query, 2 kv heads)."""
    g = torch.Generator().manual_seed(seed)
    heads, kv_heads, qk_dim, v_dim = {"mla": (4, 4, 48, 32), "gqa": (8, 2, 16, 16)}[shape]
    q = torch.randn(2, heads, q_len, qk_dim, generator=g)
    k = torch.randn(2, kv_heads, k_len, qk_dim, generator=g)
    v = torch.randn(2, kv_heads, k_len, v_dim, generator=g)
    return q, k, v, qk_dim**-0.5 * 1.37  # a YaRN-like mscale on top of 1/sqrt(d)


def _real_rows(mask: AttentionMask, x: torch.Tensor) -> torch.Tensor:
    """Rows of x [B, H, Sq, ...] that are real queries (padding rows differ by design)."""
    valid = mask.query_valid
    return x if valid is None else x.transpose(1, 2)[valid]


@pytest.mark.parametrize("shape", ["mla", "gqa"])
@pytest.mark.parametrize("name", sorted(MASKS))
def test_flex_outputs_equal_eager(shape, name):
    mask = MASKS[name]()
    q, k, v, scale = _qkv(shape, *mask.shape[1:])
    got, head_max = flex_dot_product_attention(q, k, v, mask, scale, track_max=False)
    assert head_max is None
    assert "allowed" not in mask._derived  # flex never builds the dense [B, Sq, Sk] mask
    expected, _ = eager_dot_product_attention(q, k, v, mask, scale, track_max=False)
    assert got.shape == expected.shape
    torch.testing.assert_close(
        _real_rows(mask, got), _real_rows(mask, expected), atol=2e-5, rtol=1e-5
    )


def _no_score_mod(score, b, h, q_idx, kv_idx):
    return score


def _reference_flex_row_max(q, k, v, mask: AttentionMask, scale: float) -> torch.Tensor:
    """Per-row max scores [B, H, Sq] from torch's reference (unfused) flex_attention.

    The public API refuses ``max_scores`` on CPU before dispatch; this calls the operator
    it dispatches to, whose reference implementation works in log2 units like the kernels
    (the public API multiplies by ln 2 on the way out, as here).
    """
    options = {
        "BACKEND": "AUTO",
        "PRESCALE_QK": False,
        "ROWS_GUARANTEED_SAFE": False,
        "BLOCKS_ARE_CONTIGUOUS": False,
        "WRITE_DQ": True,
        "OUTPUT_LOGSUMEXP": True,
        "OUTPUT_MAX": True,
    }
    _, _, row_max = flex_attention_op(
        q, k, v, _no_score_mod, block_mask(mask).as_tuple(), scale, options
    )
    return row_max * math.log(2)


@pytest.mark.parametrize("shape", ["mla", "gqa"])
@pytest.mark.parametrize("name", sorted(MASKS))
def test_head_max_from_flex_row_maxima_equals_eager_masked_head_max(shape, name):
    mask = MASKS[name]()
    q, k, v, scale = _qkv(shape, *mask.shape[1:], seed=1)
    if mask.query_valid is not None:  # loud padding rows, which S_max must not see
        q = torch.where(mask.query_valid[:, None, :, None], q, 10 * q)
    if shape == "gqa":  # the reference operator takes GQA as expanded heads
        group = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    _, expected = eager_dot_product_attention(q, k, v, mask, scale, track_max=True)
    row_max = _reference_flex_row_max(q, k, v, mask, scale)
    torch.testing.assert_close(mask.head_max(row_max), expected, atol=1e-5, rtol=1e-6)

    if mask.query_valid is not None:
        unmasked = row_max.amax(dim=(0, 2))
        assert bool((unmasked > expected + 1e-3).any())


def _packed_batch(vocab: int):
    g = torch.Generator().manual_seed(3)
    input_ids = torch.randint(0, vocab, (2, 20), generator=g)
    document_ids = torch.tensor([[0] * 7 + [1] * 5 + [2] * 8, [0] * 16 + [-1] * 4])
    return input_ids, document_ids


def test_model_logits_with_flex_backend_equal_eager(tiny_model):
    input_ids, document_ids = _packed_batch(tiny_model.config.vocab_size)
    real = document_ids >= 0
    with torch.no_grad():
        tiny_model.set_attention_backend("eager")
        expected = tiny_model(input_ids, document_ids=document_ids)
        tiny_model.set_attention_backend("flex")
        got = tiny_model(input_ids, document_ids=document_ids)
    torch.testing.assert_close(got[real], expected[real], atol=2e-5, rtol=1e-5)


def test_backend_selection():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_attention_backend("auto", cpu, track_max=False) == "sdpa"
    assert resolve_attention_backend("auto", cuda, track_max=False) == "sdpa"
    assert resolve_attention_backend("auto", cpu, track_max=True) == "eager"
    assert resolve_attention_backend("auto", cuda, track_max=True) == "flex"
    assert resolve_attention_backend("eager", cuda, track_max=True) == "eager"
    assert resolve_attention_backend("flex", cpu, track_max=False) == "flex"
    with pytest.raises(ValueError, match="cannot report per-head max logits"):
        resolve_attention_backend("sdpa", cuda, track_max=True)
    with pytest.raises(ValueError, match="not one of"):
        resolve_attention_backend("flash", cpu, track_max=False)


def test_set_attention_backend_reaches_every_layer_and_validates(tiny_model):
    tiny_model.set_attention_backend("flex")
    assert {attn.attention_backend for _, attn in tiny_model.attention_modules()} == {"flex"}
    with pytest.raises(ValueError, match="not one of"):
        tiny_model.set_attention_backend("flash")


def test_flex_max_logits_on_cpu_are_refused_by_torch():
    """Why ``auto`` never picks flex on CPU while tracking (torch 2.13)."""
    mask = _causal()
    q, k, v, scale = _qkv("gqa", SEQ, SEQ)
    with pytest.raises(NotImplementedError, match="max scores"):
        dot_product_attention(q, k, v, mask, scale, track_max=True, backend="flex")


needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="the fused flex kernel needs CUDA"
)


@pytest.fixture
def _ieee_fp32():
    """fp32 matmuls without TF32 (flex's kernel follows this setting too)."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


@needs_cuda
@pytest.mark.usefixtures("_ieee_fp32")
@pytest.mark.parametrize("shape", ["mla", "gqa"])
@pytest.mark.parametrize("name", sorted(MASKS))
def test_cuda_flex_head_max_and_outputs_equal_eager(shape, name):
    mask = MASKS[name]("cuda")
    q, k, v, scale = _qkv(shape, *mask.shape[1:], seed=2)
    q, k, v = q.cuda(), k.cuda(), v.cuda()
    expected, expected_max = eager_dot_product_attention(q, k, v, mask, scale, track_max=True)
    got, got_max = dot_product_attention(q, k, v, mask, scale, track_max=True)  # auto: flex
    torch.testing.assert_close(
        _real_rows(mask, got), _real_rows(mask, expected), atol=1e-4, rtol=1e-4
    )
    torch.testing.assert_close(got_max, expected_max, atol=1e-4, rtol=1e-5)


@needs_cuda
@pytest.mark.usefixtures("_ieee_fp32")
@pytest.mark.parametrize("preset", ["k2-nano", "llama-nano"])
def test_cuda_flex_max_logits_outputs_and_gradients_equal_eager(preset):
    model = load_model(preset, device="cuda")
    model.train()
    g = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, model.config.vocab_size, (2, SEQ), generator=g).cuda()
    document_ids = _packed_document_ids().cuda()
    document_ids[1, 280:] = -1  # padding at the end of row 1
    real = document_ids >= 0
    model.set_track_max_logits(True)

    def run(backend: str):
        model.set_attention_backend(backend)
        model.reset_max_logits()
        model.zero_grad(set_to_none=True)
        logits = model(input_ids, document_ids=document_ids)
        logits[real].square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logits.detach(), model.max_logits(), grads

    eager_logits, eager_max, eager_grads = run("eager")
    flex_logits, flex_max, flex_grads = run("auto")  # auto = flex on CUDA while tracking
    torch.testing.assert_close(flex_logits[real], eager_logits[real], atol=1e-4, rtol=1e-4)
    assert flex_max.keys() == eager_max.keys()
    for layer, value in eager_max.items():
        torch.testing.assert_close(flex_max[layer], value, atol=1e-4, rtol=1e-5)
    assert flex_grads.keys() == eager_grads.keys()
    for name, grad in eager_grads.items():
        torch.testing.assert_close(flex_grads[name], grad, atol=1e-4, rtol=1e-3)
