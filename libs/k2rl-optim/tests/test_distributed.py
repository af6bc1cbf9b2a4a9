"""Distributed Muon (ZeRO-1): 2 gloo processes == the single-process optimizer, bit for bit."""

from __future__ import annotations

import pytest
import torch

from k2rl.optim.distributed import plan_ownership
from k2rl.optim.testing import run_zero1_equivalence


def test_plan_is_balanced_and_deterministic() -> None:
    costs = [100.0, 90.0, 10.0, 10.0, 10.0, 5.0, 1.0]
    plan = plan_ownership(costs, 2)
    assert plan == plan_ownership(costs, 2)
    loads = [
        sum(c for c, r in zip(costs, plan.owners, strict=True) if r == rank) for rank in range(2)
    ]
    assert abs(loads[0] - loads[1]) <= 10.0
    assert sorted(plan.owned_by(0) + plan.owned_by(1)) == list(range(len(costs)))
    assert plan_ownership(costs, 1).owners == (0,) * len(costs)
    with pytest.raises(ValueError):
        plan_ownership(costs, 0)


@pytest.mark.slow
def test_two_process_zero1_matches_single_process() -> None:
    """Each rank trains on its own micro-batch; grads are reduced to owner ranks, NS runs on the
    owner over the full gradient, params are broadcast, S_max is all-reduced with MAX and QK-Clip
    fires (including on steps that start from clipped weights). The reference is one process
    with the mean gradient and the max logits over both batches."""
    ranks, ref = run_zero1_equivalence(world_size=2, steps=3)
    assert ref["clipped_steps"] >= 2  # the comparison covers clipping, repeatedly
    assert ref["stats"].num_clipped > 0 and all(ref["stats"].per_layer_num_clipped)
    for grad_sync in ("reduce", "none"):  # optimizer reduces to owners / caller all-reduced
        results = [r[grad_sync] for r in ranks]
        for rank, result in enumerate(results):
            params = result["params"]
            mismatched = [k for k, v in ref["params"].items() if not torch.equal(v, params[k])]
            assert not mismatched, (grad_sync, rank, mismatched)
            assert result["stats"] == ref["stats"]
            assert result["state_only_owned"] and result["num_state"] > 0
        # State is sharded: every parameter is owned by exactly one rank.
        owned = [set(r["owned_names"]) for r in results]
        assert not owned[0] & owned[1]
        assert owned[0] | owned[1] == set(ref["params"])
