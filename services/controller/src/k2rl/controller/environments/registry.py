"""Environment registry: a name in ``EnvironmentSpec.name`` -> how to build its episodes and tasks.

Heavy environments call services (judge, sandbox) through ``EnvironmentServices``, given
once per run; ``register`` adds new environments without touching the controller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k2rl.controller.environments.arithmetic import (
    ArithmeticEnvironment,
    ArithmeticOptions,
    ArithmeticTasks,
)
from k2rl.controller.environments.base import Environment, TaskSource
from k2rl.controller.environments.judged import CodeEnvironment, JsonlTasks, MathEnvironment


@dataclass(frozen=True)
class EnvironmentServices:
    """Stubs environments may use; None where the deployment has no such service."""

    judge: Any = None
    sandbox: Any = None


@dataclass(frozen=True)
class EnvironmentSetup:
    """What a run needs from one environment: episodes and the tasks to prompt them with."""

    new_episode: Callable[[], Environment]
    tasks: TaskSource
    held_out: TaskSource | None = None  # evaluation tasks the run never prompts with, where the environment has them


Builder = Callable[[dict[str, str], str, int, EnvironmentServices], EnvironmentSetup]
_REGISTRY: dict[str, Builder] = {}


def register(name: str, builder: Builder) -> None:
    """Register ``builder(options, dataset, seed, services)`` under ``name``."""
    if name in _REGISTRY:
        raise ValueError(f"environment {name!r} is already registered")
    _REGISTRY[name] = builder


def registered() -> list[str]:
    return sorted(_REGISTRY)


def build_environment(name: str, options: dict[str, str], dataset: str, seed: int,
                      services: EnvironmentServices) -> EnvironmentSetup:
    """Raises ValueError (unknown name, bad options, unreadable dataset) with the reason."""
    try:
        builder = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown environment {name!r}; registered: {', '.join(registered())}") from None
    return builder(options, dataset, seed, services)


def _arithmetic(options: dict[str, str], dataset: str, seed: int, services: EnvironmentServices) -> EnvironmentSetup:
    if dataset:
        raise ValueError("the arithmetic environment generates its tasks; leave dataset empty")
    parsed = ArithmeticOptions.from_options(options, seed)
    return EnvironmentSetup(ArithmeticEnvironment, ArithmeticTasks(parsed), ArithmeticTasks(parsed, held_out=True))


def _judged(env_type: type[MathEnvironment] | type[CodeEnvironment]) -> Builder:
    def build(options: dict[str, str], dataset: str, seed: int, services: EnvironmentServices) -> EnvironmentSetup:
        if services.judge is None:
            raise ValueError(f"the {env_type.name} environment needs the judge service")
        if not dataset:
            raise ValueError(f"the {env_type.name} environment needs a dataset (a JSONL file)")
        try:
            tasks = JsonlTasks(dataset, seed)
        except OSError as error:
            raise ValueError(f"cannot read dataset {dataset}: {error.strerror}") from None
        timeout_s = float(options.get("judge_timeout_s", 60))
        return EnvironmentSetup(lambda: env_type(services.judge, timeout_s), tasks)
    return build


register("arithmetic", _arithmetic)
register("math", _judged(MathEnvironment))
register("code", _judged(CodeEnvironment))
