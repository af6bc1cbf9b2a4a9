"""Memory states of a replica (proto ``SleepState`` / ``MemoryPool``, vLLM sleep-mode semantics)."""

from __future__ import annotations

import enum


class SleepState(enum.Enum):
    AWAKE = "awake"
    LEVEL_1 = "level_1"  # weights offloaded to host memory, KV cache released
    LEVEL_2 = "level_2"  # weights and KV cache released; the next update restores weights
    WEIGHTS_ONLY = "weights_only"  # weights on the device, no KV cache: can update, cannot generate


class MemoryPool(enum.Enum):
    WEIGHTS = "weights"
    KV_CACHE = "kv_cache"
