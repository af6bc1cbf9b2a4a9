"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from k2rl.models import build_model, save_model
from k2rl.trainer.testing import tiny_config


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model as an HF checkpoint directory (what ranks read once at startup)."""
    path = tmp_path_factory.mktemp("tiny-k2")
    save_model(build_model(tiny_config(), seed=0), path)
    return path
