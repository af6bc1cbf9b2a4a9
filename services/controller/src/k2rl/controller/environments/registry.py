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
from k2rl.controller.environments.instruction import (
    InstructionFollowingEnvironment,
    InstructionOptions,
    InstructionTasks,
    check_dataset_row,
)
from k2rl.controller.environments.judged import CodeEnvironment, JsonlTasks, MathEnvironment
from k2rl.controller.environments.tool_use import (
    ToolUseEnvironment,
    ToolUseOptions,
    check_tool_use_row,
)


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


def _load_dataset(dataset: str, seed: int,
                  check_row: Callable[[dict[str, Any], str], None] | None = None) -> JsonlTasks:
    """The JSONL dataset at ``dataset``, every row checked by ``check_row`` up front."""
    try:
        tasks = JsonlTasks(dataset, seed)
    except OSError as error:
        raise ValueError(f"cannot read dataset {dataset}: {error.strerror}") from None
    if check_row is not None:
        for index in range(len(tasks)):
            check_row(tasks.task(index).reference, f"{dataset} (task {index})")
    return tasks


def _judged(env_type: type[MathEnvironment] | type[CodeEnvironment]) -> Builder:
    def build(options: dict[str, str], dataset: str, seed: int, services: EnvironmentServices) -> EnvironmentSetup:
        if services.judge is None:
            raise ValueError(f"the {env_type.name} environment needs the judge service")
        if not dataset:
            raise ValueError(f"the {env_type.name} environment needs a dataset (a JSONL file)")
        tasks = _load_dataset(dataset, seed)
        timeout_s = float(options.get("judge_timeout_s", 60))
        return EnvironmentSetup(lambda: env_type(services.judge, timeout_s), tasks)
    return build


register("arithmetic", _arithmetic)
register("math", _judged(MathEnvironment))
register("code", _judged(CodeEnvironment))


def _instruction_following(options: dict[str, str], dataset: str, seed: int,
                           services: EnvironmentServices) -> EnvironmentSetup:
    """Generated tasks (held-out stream included), or a JSONL dataset of prompts with constraints."""
    if services.judge is None:
        raise ValueError("the instruction_following environment needs the judge service (its checkers)")
    timeout_s = float(options.get("judge_timeout_s", 60))

    def episode() -> InstructionFollowingEnvironment:
        return InstructionFollowingEnvironment(services.judge, timeout_s)

    if not dataset:
        parsed = InstructionOptions.from_options(options, seed)
        return EnvironmentSetup(episode, InstructionTasks(parsed), InstructionTasks(parsed, held_out=True))
    return EnvironmentSetup(episode, _load_dataset(dataset, seed, check_dataset_row))


register("instruction_following", _instruction_following)


def _tool_use(options: dict[str, str], dataset: str, seed: int, services: EnvironmentServices) -> EnvironmentSetup:
    """Tasks, rubrics and simulated tools from a ``k2rl synth`` rl_environment.jsonl."""
    if services.judge is None:
        raise ValueError("the tool_use environment needs the judge service (rubric checkpoints)")
    if not dataset:
        raise ValueError("the tool_use environment needs a dataset: the rl_environment.jsonl of a k2rl synth run")
    parsed = ToolUseOptions.from_options(options)
    tasks = _load_dataset(dataset, seed, check_tool_use_row)
    return EnvironmentSetup(lambda: ToolUseEnvironment(services.judge, parsed), tasks)


register("tool_use", _tool_use)
