"""LR schedules (K2 §2.5 WSD with a cosine decay stage; constant; cosine)."""

from __future__ import annotations

import math

import pytest

from k2rl.optim import ConstantSchedule, CosineSchedule, WSDSchedule, k2_pretrain_schedule


def test_wsd_stages() -> None:
    s = WSDSchedule(warmup_steps=4, stable_steps=3, decay_steps=4, final_ratio=0.1)
    assert [s(i) for i in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert [s(i) for i in range(4, 7)] == [1.0, 1.0, 1.0]
    decay = [s(i) for i in range(7, 11)]
    expected = [0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(1, 5)]
    assert decay == pytest.approx(expected)
    assert decay[-1] == pytest.approx(0.1) and s(50) == pytest.approx(0.1)
    assert all(a > b for a, b in zip(decay[:-1], decay[1:], strict=True))
    assert s.total_steps == 11


def test_k2_schedule_shape() -> None:
    s = k2_pretrain_schedule(stable_steps=1000, decay_steps=500)
    assert s(0) == pytest.approx(1 / 500) and s(499) == 1.0 and s(1499) == 1.0
    assert s(1999) == pytest.approx(0.1)  # 2e-4 -> 2e-5


def test_cosine_and_constant() -> None:
    c = CosineSchedule(total_steps=10, warmup_steps=2, final_ratio=0.0)
    assert c(0) == 0.5 and c(1) == 1.0
    assert c(9) == pytest.approx(0.0) and c(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert ConstantSchedule()(0) == 1.0 and ConstantSchedule(warmup_steps=2)(0) == 0.5
    with pytest.raises(ValueError):
        CosineSchedule(total_steps=2, warmup_steps=2)
    with pytest.raises(ValueError):
        WSDSchedule(1, 1, 1, final_ratio=2.0)
