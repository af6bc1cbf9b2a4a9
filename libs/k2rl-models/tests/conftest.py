"""Fixtures shared by the model tests (fp32, CPU, seconds)."""

from __future__ import annotations

import pytest

from k2rl.models.testing import tiny_model as _tiny_model


@pytest.fixture(params=["mla", "gqa"])
def tiny_model(request):
    """One tiny K2-shaped (MLA + MoE) and one tiny Qwen3-shaped (GQA) model."""
    return _tiny_model(request.param)
