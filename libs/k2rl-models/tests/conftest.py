"""Fixtures shared by the model tests (fp32, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from k2rl.models.testing import tiny_model as _tiny_model


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core box the
    thread pool's spinning under contention made this suite 10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=["mla", "gqa"])
def tiny_model(request):
    """One tiny K2-shaped (MLA + MoE) and one tiny Qwen3-shaped (GQA) model."""
    return _tiny_model(request.param)
