"""k2rl.optim: MuonClip (K2 Algorithm 1), Distributed Muon (ZeRO-1) and LR schedules.

The math lives in pure functions (:mod:`.newton_schulz`, :mod:`.muon`, :mod:`.adamw`,
:mod:`.qk_clip`); :class:`MuonClip` wires them into one ``torch.optim.Optimizer``.
"""

from k2rl.optim.adamw import adamw_step_
from k2rl.optim.distributed import OwnershipPlan, plan_ownership
from k2rl.optim.muon import muon_momentum_, muon_update_scale, orthogonalise
from k2rl.optim.muonclip import K2_TAU, MuonClip, QKClipStats
from k2rl.optim.newton_schulz import NS_COEFFICIENTS, NS_STEPS, newton_schulz, newton_schulz_batched
from k2rl.optim.param_roles import param_groups_for_model, parameter_role
from k2rl.optim.qk_clip import (
    GQAHeadLayout,
    MLAHeadLayout,
    gqa_clip_factors,
    gqa_qk_clip_,
    mla_qk_clip_,
    qk_clip_gammas,
    qk_norm_clip_,
)
from k2rl.optim.schedules import (
    ConstantSchedule,
    CosineSchedule,
    WSDSchedule,
    k2_pretrain_schedule,
    lr_scheduler,
)
from k2rl.optim.targets import QKClipTarget, find_qk_clip_targets

__all__ = [
    "K2_TAU",
    "NS_COEFFICIENTS",
    "NS_STEPS",
    "ConstantSchedule",
    "CosineSchedule",
    "GQAHeadLayout",
    "MLAHeadLayout",
    "MuonClip",
    "OwnershipPlan",
    "QKClipStats",
    "QKClipTarget",
    "WSDSchedule",
    "adamw_step_",
    "find_qk_clip_targets",
    "gqa_clip_factors",
    "gqa_qk_clip_",
    "k2_pretrain_schedule",
    "lr_scheduler",
    "mla_qk_clip_",
    "muon_momentum_",
    "muon_update_scale",
    "newton_schulz",
    "newton_schulz_batched",
    "orthogonalise",
    "param_groups_for_model",
    "parameter_role",
    "plan_ownership",
    "qk_clip_gammas",
    "qk_norm_clip_",
]
