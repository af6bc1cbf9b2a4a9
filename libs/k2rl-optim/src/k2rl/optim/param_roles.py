"""Which parameters Muon takes and which go to AdamW (K2 §2.1; Moonlight §2.3).

Muon is an optimiser for the 2-D *hidden* matrices of the network. Everything else goes to
AdamW inside the same MuonClip object:

* embeddings (``embed_tokens``) and the output head (``lm_head``) -- their rows/columns are
  per-token vectors, not a linear map between hidden spaces;
* norms and biases (any parameter with fewer than 2 dims);
* the router's ``e_score_correction_bias`` (1-D; in DeepSeek-V3/K2 it receives no gradient --
  it only shifts expert selection -- and is moved by the aux-loss-free balancing rule, which is
  the trainer's business; here it just must never reach Muon).

The router ``gate.weight`` (``[n_routed_experts, hidden]``) is a hidden linear map and goes to
Muon. A 3-D parameter whose name contains ``experts`` is a stack of per-expert matrices and goes
to Muon, orthogonalised per expert. Other shapes are refused rather than guessed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from torch import Tensor, nn

__all__ = ["ADAMW_NAME_PATTERNS", "ParamRole", "param_groups_for_model", "parameter_role"]

ParamRole = Literal["muon", "adamw"]

ADAMW_NAME_PATTERNS: tuple[str, ...] = (
    "embed_tokens",
    "lm_head",
    "e_score_correction_bias",
    "wte",
    "wpe",
)


def parameter_role(
    name: str, param: Tensor, *, adamw_patterns: Iterable[str] = ADAMW_NAME_PATTERNS
) -> ParamRole:
    """Role of one named parameter (see the module docstring for the rules)."""
    if any(pattern in name for pattern in adamw_patterns) or param.ndim < 2:
        return "adamw"
    if param.ndim == 2:
        return "muon"
    if param.ndim == 3 and "experts" in name:
        return "muon"
    raise ValueError(
        f"{name}: no rule for a {param.ndim}-D parameter {tuple(param.shape)}; name it in "
        "adamw_patterns or give it an explicit group"
    )


def param_groups_for_model(
    model: nn.Module,
    *,
    extra_adamw_patterns: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Two param groups (``role`` "muon" and "adamw", with ``param_names``) for ``model``.

    Parameters with ``requires_grad=False`` are left out; tied weights appear once
    (``named_parameters`` de-duplicates them, under the first name).
    """
    patterns = tuple(ADAMW_NAME_PATTERNS) + tuple(extra_adamw_patterns)
    groups: dict[ParamRole, dict[str, Any]] = {
        "muon": {"role": "muon", "params": [], "param_names": []},
        "adamw": {"role": "adamw", "params": [], "param_names": []},
    }
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = groups[parameter_role(name, param, adamw_patterns=patterns)]
        group["params"].append(param)
        group["param_names"].append(name)
    return [g for g in groups.values() if g["params"]]
