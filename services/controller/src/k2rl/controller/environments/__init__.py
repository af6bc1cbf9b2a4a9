"""Gym-like RL environments and their registry (K2 section 3.3.4)."""

from k2rl.controller.environments.base import Environment, StepResult, Task, TaskSource
from k2rl.controller.environments.registry import (
    EnvironmentServices,
    EnvironmentSetup,
    build_environment,
    register,
    registered,
)

__all__ = ["Environment", "EnvironmentServices", "EnvironmentSetup", "StepResult", "Task", "TaskSource",
           "build_environment", "register", "registered"]
