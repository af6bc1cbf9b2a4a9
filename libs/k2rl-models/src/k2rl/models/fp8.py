"""FP8 (e4m3) block-scaled weights as in DeepSeek-V3 / Kimi K2 checkpoints.

A linear weight W [out, in] is stored as ``weight`` (float8_e4m3fn) plus
``weight_scale_inv`` (fp32 [ceil(out/128), ceil(in/128)]): one scale per 128x128 block,
and W = weight * weight_scale_inv blockwise (DeepSeek-V3's ``weight_dequant``). The last
row/column of blocks may be partial.
"""

from __future__ import annotations

import torch

BLOCK = 128
FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8_DTYPE).max  # 448


def _expand_blocks(scale: torch.Tensor, shape: torch.Size, block: int) -> torch.Tensor:
    rows, cols = shape
    return scale.repeat_interleave(block, dim=0)[:rows].repeat_interleave(block, dim=1)[:, :cols]


def dequantize_fp8_blocks(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    *,
    block: int = BLOCK,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """W = fp8 weight * per-block ``scale_inv``, computed in fp32, returned in ``dtype``."""
    if weight.dim() != 2:
        raise ValueError("block-scaled FP8 applies to 2-D weights")
    expected = (-(-weight.shape[0] // block), -(-weight.shape[1] // block))
    if tuple(scale_inv.shape) != expected:
        raise ValueError(
            f"weight_scale_inv shape {tuple(scale_inv.shape)} != {expected} "
            f"for weight {tuple(weight.shape)}"
        )
    full = weight.to(torch.float32) * _expand_blocks(
        scale_inv.to(torch.float32), weight.shape, block
    )
    return full.to(dtype)


def quantize_fp8_blocks(
    weight: torch.Tensor, *, block: int = BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 weight, fp32 scale_inv) with each block's absolute max mapped to the fp8 max (448)."""
    if weight.dim() != 2:
        raise ValueError("block-scaled FP8 applies to 2-D weights")
    rows, cols = weight.shape
    pad_rows, pad_cols = -rows % block, -cols % block
    w = torch.nn.functional.pad(weight.to(torch.float32), (0, pad_cols, 0, pad_rows))
    blocks = w.view(w.shape[0] // block, block, w.shape[1] // block, block)
    amax = blocks.abs().amax(dim=(1, 3))
    scale_inv = torch.where(amax > 0, amax / FP8_MAX, torch.ones_like(amax))
    q = (w / _expand_blocks(scale_inv, w.shape, block)).clamp(-FP8_MAX, FP8_MAX)
    return q[:rows, :cols].to(FP8_DTYPE).contiguous(), scale_inv.contiguous()
