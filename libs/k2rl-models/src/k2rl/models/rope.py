"""Rotary position embeddings: default, linear, llama3 and YaRN (K2 report §2.4 / DeepSeek-V3).

``rope_frequencies`` is pure math and returns the inverse frequencies plus the factor by
which cos/sin are multiplied (YaRN's attention temperature; 1.0 otherwise). The formulas
follow the YaRN paper as implemented by DeepSeek-V3 and transformers (floor/ceil-truncated
correction range, linear ramp over dim/2 frequencies).

Two layouts of the rotated dimensions exist in checkpoints:
* half-split (Llama/Qwen, "neox"): dims (i, i + d/2) form a pair;
* interleaved (DeepSeek-V3 / K2 ``rope_interleave``): dims (2i, 2i + 1) form a pair.
``apply_rotary`` keeps the layout of its input, so q·k is identical either way.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from k2rl.models.config import RopeConfig


def yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    """YaRN attention temperature sqrt(1/t) = 0.1 * ln(s) + 1 (YaRN §3.4), scaled by ``mscale``."""
    if scale <= 1:
        return 1.0
    return 0.1 * mscale * math.log(scale) + 1.0


def _base_inv_freq(theta: float, dim: int) -> torch.Tensor:
    return 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))


def _yarn_inv_freq(
    rope: RopeConfig, dim: int, max_position_embeddings: int
) -> tuple[torch.Tensor, float]:
    factor = rope.factor
    original = rope.original_max_position_embeddings or max_position_embeddings
    if factor is None:
        factor = max_position_embeddings / original
    if rope.attention_factor is not None:
        attention_factor = rope.attention_factor
    elif rope.mscale and rope.mscale_all_dim:
        attention_factor = yarn_mscale(factor, rope.mscale) / yarn_mscale(
            factor, rope.mscale_all_dim
        )
    else:
        attention_factor = yarn_mscale(factor)

    def correction_dim(num_rotations: float) -> float:
        return (dim * math.log(original / (num_rotations * 2 * math.pi))) / (
            2 * math.log(rope.theta)
        )

    low, high = correction_dim(rope.beta_fast), correction_dim(rope.beta_slow)
    if rope.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a zero-width ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    extrapolation_weight = 1 - ramp  # 1: keep the original frequency (high-frequency dims)

    pos_freqs = rope.theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    inv_extrapolation = 1.0 / pos_freqs
    inv_interpolation = 1.0 / (factor * pos_freqs)
    inv_freq = (
        inv_interpolation * (1 - extrapolation_weight) + inv_extrapolation * extrapolation_weight
    )
    return inv_freq, float(attention_factor)


def _llama3_inv_freq(rope: RopeConfig, dim: int) -> torch.Tensor:
    inv_freq = _base_inv_freq(rope.theta, dim)
    factor = rope.factor
    assert factor is not None and rope.original_max_position_embeddings is not None
    old_len = rope.original_max_position_embeddings
    low_freq_wavelen = old_len / rope.low_freq_factor
    high_freq_wavelen = old_len / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) & ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_frequencies(
    rope: RopeConfig, dim: int, max_position_embeddings: int
) -> tuple[torch.Tensor, float]:
    """Inverse frequencies [dim/2] and the cos/sin multiplier for rotary dimension ``dim``."""
    if rope.type == "default":
        return _base_inv_freq(rope.theta, dim), 1.0
    if rope.type == "linear":
        assert rope.factor is not None
        return _base_inv_freq(rope.theta, dim) / rope.factor, 1.0
    if rope.type == "llama3":
        return _llama3_inv_freq(rope, dim), 1.0
    return _yarn_inv_freq(rope, dim, max_position_embeddings)


def yarn_softmax_scale(rope: RopeConfig, head_dim: int) -> float:
    """DeepSeek-V3's softmax scale: head_dim^-0.5, times mscale(factor, mscale_all_dim)^2 (YaRN).

    This is the "mscale softmax correction": with K2's mscale == mscale_all_dim the cos/sin
    multiplier is 1 and the whole YaRN temperature lands on the softmax scale instead.
    """
    scale = head_dim**-0.5
    if rope.type == "yarn" and rope.mscale_all_dim:
        assert rope.factor is not None
        m = yarn_mscale(rope.factor, rope.mscale_all_dim)
        scale = scale * m * m
    return scale


class RotaryEmbedding(nn.Module):
    """cos/sin tables for given positions. Holds no state (no buffers): safe on meta devices."""

    def __init__(self, rope: RopeConfig, dim: int, max_position_embeddings: int) -> None:
        super().__init__()
        self.dim = dim
        with torch.device("cpu"):  # also when the model is built under torch.device("meta")
            inv_freq, self.attention_factor = rope_frequencies(rope, dim, max_position_embeddings)
        self._inv_freq_cpu = inv_freq
        self._inv_freq_cache: dict[torch.device, torch.Tensor] = {}

    def _inv_freq(self, device: torch.device) -> torch.Tensor:
        cached = self._inv_freq_cache.get(device)
        if cached is None:
            cached = self._inv_freq_cache[device] = self._inv_freq_cpu.to(device)
        return cached

    def forward(
        self, position_ids: torch.Tensor, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin of shape [B, S, dim/2] (one angle per rotated pair), computed in fp32."""
        angles = position_ids.float()[..., None] * self._inv_freq(position_ids.device)
        cos = angles.cos() * self.attention_factor
        sin = angles.sin() * self.attention_factor
        return cos.to(dtype), sin.to(dtype)


def apply_rotary(
    x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, interleaved: bool
) -> torch.Tensor:
    """Rotate ``x`` [B, S, H, D] by angles cos/sin [B, S, D/2]; the pair layout is preserved."""
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    if interleaved:
        x1, x2 = x[..., 0::2], x[..., 1::2]
        return torch.stack((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
