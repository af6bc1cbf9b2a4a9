"""Sampling-temperature decay over training (K2 section 3.2.3): explore early, exploit late."""

from __future__ import annotations

import math

from k2rl.controller.v1 import controller_pb2


def is_set(schedule: controller_pb2.TemperatureSchedule) -> bool:
    return schedule.initial_temperature > 0 or schedule.final_temperature > 0


def temperature_at(schedule: controller_pb2.TemperatureSchedule, iteration: int) -> float:
    """Temperature of ``iteration`` under ``schedule`` (CONSTANT when the shape is unset)."""
    start, end = schedule.initial_temperature, schedule.final_temperature
    if schedule.shape in (controller_pb2.SCHEDULE_SHAPE_UNSPECIFIED, controller_pb2.SCHEDULE_SHAPE_CONSTANT) \
            or schedule.decay_iterations == 0:
        return start
    progress = min(iteration / schedule.decay_iterations, 1.0)
    if schedule.shape == controller_pb2.SCHEDULE_SHAPE_COSINE:
        progress = (1 - math.cos(math.pi * progress)) / 2
    return start + (end - start) * progress
