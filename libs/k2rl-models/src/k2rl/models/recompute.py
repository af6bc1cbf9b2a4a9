"""Activation checkpointing per decoder layer, and knowing when a forward is a recompute.

Under checkpointing, backward runs each layer's forward a second time. Statistics that a
forward records must not count twice: the running max logit is idempotent, but MoE expert
load counts are sums, so ``MoE`` skips recording while ``is_recomputing()``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

_RECOMPUTING: ContextVar[bool] = ContextVar("k2rl_models_recomputing", default=False)


def is_recomputing() -> bool:
    return _RECOMPUTING.get()


@contextlib.contextmanager
def _recomputing() -> Iterator[None]:
    token = _RECOMPUTING.set(True)
    try:
        yield
    finally:
        _RECOMPUTING.reset(token)


def _contexts() -> (
    tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]
):
    return contextlib.nullcontext(), _recomputing()


def checkpointed(fn: Callable[..., torch.Tensor], *args: Any) -> torch.Tensor:
    """``fn(*args)`` without keeping its activations; recomputed in backward."""
    return checkpoint(fn, *args, use_reentrant=False, context_fn=_contexts)
