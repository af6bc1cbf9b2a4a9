"""Shared fixtures: tiny models (milliseconds per step on CPU) and engines over them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from k2rl.inference.engine import Engine, EngineConfig
from k2rl.inference.testing import TinyTokenizer
from k2rl.models.testing import tiny_model


@pytest.fixture(scope="session")
def mla_model():
    torch.manual_seed(0)
    return tiny_model("mla", seed=0, eos_token_id=90)


@pytest.fixture(scope="session")
def gqa_model():
    return tiny_model("gqa", seed=1, eos_token_id=90)


@pytest.fixture
def make_engine(mla_model) -> Callable[..., Engine]:
    def make(model=None, **config) -> Engine:
        config.setdefault("block_size", 4)
        config.setdefault("num_kv_blocks", 64)
        return Engine(model or mla_model, TinyTokenizer(), EngineConfig(**config))

    return make
