"""Binding QK-Clip to a model's attention modules (duck-typed on the ``k2rl.models`` contract).

An attention module qualifies when it has ``track_max_logits`` and ``max_logits`` (float32
``[num_heads]``, the running per-head max of pre-softmax logits since the last reset). Its kind
follows from its submodules, named as in HF:

* MLA (``k2rl.models.deepseek_v3.MLAttention``): ``kv_b_proj`` plus ``q_b_proj`` or ``q_proj``;
  attributes ``num_heads``, ``qk_nope_head_dim``, ``qk_rope_head_dim``, ``v_head_dim``.
* MHA/GQA (``k2rl.models.llama.GQAttention``): ``q_proj``/``k_proj``; attributes ``num_heads``,
  ``num_key_value_heads``, ``head_dim``; optional ``q_norm``/``k_norm`` (Qwen3).

No import of ``k2rl.models`` is needed, so any module honouring the contract (including the toy
modules of :mod:`k2rl.optim.testing`) can be clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from k2rl.optim.qk_clip import (
    GQAHeadLayout,
    GQARule,
    MLAHeadLayout,
    gqa_qk_clip_,
    mla_qk_clip_,
    qk_norm_clip_,
)

__all__ = ["QKClipTarget", "QKNormPolicy", "find_qk_clip_targets", "is_tracked_attention"]

QKNormPolicy = Literal["layer", "error"]


def is_tracked_attention(module: nn.Module) -> bool:
    return hasattr(module, "track_max_logits") and hasattr(module, "max_logits")


@dataclass(eq=False)
class QKClipTarget:
    """One attention layer to clip: where its weights live and how its heads are laid out."""

    layer: int
    module: nn.Module
    kind: Literal["mla", "gqa", "gqa_qk_norm"]
    layout: MLAHeadLayout | GQAHeadLayout

    @property
    def num_heads(self) -> int:
        return self.layout.num_heads

    def read_max_logits(self, device: torch.device) -> Tensor:
        """This step's ``S_max`` (fp32 ``[num_heads]``); ``-inf`` where nothing was measured."""
        s = getattr(self.module, "max_logits", None)
        if s is None:
            return torch.full((self.num_heads,), float("-inf"), device=device)
        if s.numel() != self.num_heads:
            raise ValueError(
                f"layer {self.layer}: max_logits has {s.numel()} entries, expected {self.num_heads}"
            )
        return s.detach().to(device=device, dtype=torch.float32).reshape(self.num_heads)

    def reset_max_logits(self) -> None:
        reset = getattr(self.module, "reset_max_logits", None)
        if callable(reset):
            reset()
        else:
            self.module.max_logits = None

    def parameters(self) -> list[Tensor]:
        """Every tensor :meth:`clip_` may modify (ZeRO-1 checks these are replicated)."""
        names = {
            "mla": ("q_proj", "q_b_proj", "kv_b_proj"),
            "gqa": ("q_proj", "k_proj"),
            "gqa_qk_norm": ("q_norm", "k_norm"),
        }[self.kind]
        out: list[Tensor] = []
        for name in names:
            sub = getattr(self.module, name, None)
            if sub is None:
                continue
            out.append(sub.weight)
            if getattr(sub, "bias", None) is not None:
                out.append(sub.bias)
        return out

    @torch.no_grad()
    def clip_(self, gammas: Tensor, *, gqa_rule: GQARule = "exact", gqa_alpha: float = 0.5) -> None:
        m = self.module
        if self.kind == "mla":
            assert isinstance(self.layout, MLAHeadLayout)
            q = m.q_b_proj if getattr(m, "q_b_proj", None) is not None else m.q_proj
            mla_qk_clip_(
                q.weight,
                m.kv_b_proj.weight,
                gammas,
                self.layout,
                q_bias=q.bias,
                kv_b_bias=m.kv_b_proj.bias,
            )
        elif self.kind == "gqa":
            assert isinstance(self.layout, GQAHeadLayout)
            gqa_qk_clip_(
                m.q_proj.weight,
                m.k_proj.weight,
                gammas,
                self.layout,
                q_bias=m.q_proj.bias,
                k_bias=m.k_proj.bias,
                rule=gqa_rule,
                alpha=gqa_alpha,
            )
        else:
            qk_norm_clip_(m.q_norm.weight, m.k_norm.weight, gammas)


def _target_for(layer: int, module: nn.Module, qk_norm_policy: QKNormPolicy) -> QKClipTarget:
    if getattr(module, "kv_b_proj", None) is not None:
        layout = MLAHeadLayout(
            num_heads=int(module.num_heads),
            qk_nope_head_dim=int(module.qk_nope_head_dim),
            qk_rope_head_dim=int(module.qk_rope_head_dim),
            v_head_dim=int(module.v_head_dim),
        )
        return QKClipTarget(layer, module, "mla", layout)
    if getattr(module, "q_proj", None) is not None and getattr(module, "k_proj", None) is not None:
        num_heads = int(module.num_heads)
        layout = GQAHeadLayout(
            num_heads=num_heads,
            num_kv_heads=int(getattr(module, "num_key_value_heads", num_heads)),
            head_dim=int(module.head_dim),
        )
        if (
            getattr(module, "q_norm", None) is not None
            or getattr(module, "k_norm", None) is not None
        ):
            if qk_norm_policy == "error":
                raise ValueError(
                    f"layer {layer}: per-head q_norm/k_norm cancel QK-Clip's W_q/W_k scaling and "
                    "are shared by all heads; use qk_norm_policy='layer' or disable QK-Clip"
                )
            if getattr(module, "q_norm", None) is None or getattr(module, "k_norm", None) is None:
                raise ValueError(f"layer {layer}: QK-Clip needs both q_norm and k_norm, or neither")
            return QKClipTarget(layer, module, "gqa_qk_norm", layout)
        return QKClipTarget(layer, module, "gqa", layout)
    raise ValueError(
        f"layer {layer}: {type(module).__name__} tracks max logits but has neither MLA "
        "(kv_b_proj) nor MHA/GQA (q_proj, k_proj) projections"
    )


def find_qk_clip_targets(
    model: nn.Module, *, qk_norm_policy: QKNormPolicy = "layer"
) -> list[QKClipTarget]:
    """All attention layers of ``model`` as clip targets, in layer order.

    Uses ``model.attention_modules()`` (``[(layer_idx, module)]``) when the model provides it,
    else every submodule that tracks max logits, numbered in ``model.modules()`` order.
    """
    finder = getattr(model, "attention_modules", None)
    if callable(finder):
        pairs = [(int(i), m) for i, m in finder()]
    else:
        pairs = list(enumerate(m for m in model.modules() if is_tracked_attention(m)))
    return [_target_for(i, m, qk_norm_policy) for i, m in pairs]
