"""The one Gym-like interface every RL environment implements (K2 section 3.3.4).

An ``Environment`` instance is one episode: ``reset(task)`` returns the first observation
(the prompt), ``step(action)`` takes the model's turn and returns the next observation,
the reward, whether the episode is done, and diagnostics. Single-turn environments are
done after the first step; multi-turn ones return a tool/user observation instead.

Episodes must survive a controller restart in the middle (partial rollout): ``snapshot()``
returns JSON-able state and ``restore()`` rebuilds an episode from it, so a paused
trajectory resumes with its environment exactly where it was.

Methods block; the rollout manager runs each episode on its own worker thread, so an
environment may call slow services (judge, sandbox, tool simulators) directly.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from k2rl.models.tokenizer import Tokenizer


@dataclass(frozen=True)
class Task:
    """One prompt of an environment's dataset, with what is needed to verify an answer."""

    task_id: str
    prompt: str
    reference: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "prompt": self.prompt, "reference": self.reference}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(data["task_id"], data["prompt"], dict(data.get("reference", {})))


@dataclass(frozen=True)
class StepResult:
    """What ``step`` returns: Gym's (observation, reward, done, info)."""

    observation: str
    reward: float
    done: bool
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.info.get("passed", self.reward >= 1.0))


class Environment(abc.ABC):
    """One episode of a task. Create a fresh instance per trajectory."""

    #: Registry name, e.g. "arithmetic".
    name: str = ""
    #: Whether ``step`` sees the model's special tokens (e.g. K2's tool-call markers). Most
    #: environments read plain text; tool-use ones need the markers to find the calls.
    keeps_special_tokens: bool = False

    def __init__(self) -> None:
        self.task: Task | None = None
        self.turns_taken = 0

    def reset(self, task: Task) -> str:
        """Start an episode on ``task``; return the first observation (the prompt text)."""
        self.task = task
        self.turns_taken = 0
        return self.format_prompt(task)

    def decode_action(self, tokenizer: Tokenizer, token_ids: Sequence[int]) -> str:
        """The text ``step`` sees for one model turn of ``token_ids``."""
        return tokenizer.decode(token_ids, skip_special_tokens=not self.keeps_special_tokens)

    def step(self, action: str) -> StepResult:
        """Apply the model's turn ``action`` (decoded text)."""
        if self.task is None:
            raise RuntimeError(f"{type(self).__name__}.step called before reset")
        self.turns_taken += 1
        return self.evaluate(self.task, action)

    def snapshot(self) -> dict[str, Any]:
        """JSON-able episode state, enough for ``restore`` to continue the episode."""
        return {"task": self.task.to_json() if self.task else None, "turns_taken": self.turns_taken}

    def restore(self, state: dict[str, Any]) -> None:
        self.task = Task.from_json(state["task"]) if state.get("task") else None
        self.turns_taken = int(state.get("turns_taken", 0))

    @abc.abstractmethod
    def format_prompt(self, task: Task) -> str:
        """The text the model is prompted with."""

    @abc.abstractmethod
    def evaluate(self, task: Task, action: str) -> StepResult:
        """Score (or advance) the episode given the model's latest turn."""

    def close(self) -> None:  # noqa: B027 - optional hook; most episodes hold no resources
        """Release per-episode resources (sandbox sessions ...). Default: nothing."""


class TaskSource(abc.ABC):
    """An environment's prompts as an indexable, deterministic sequence.

    The dataset cursor of a run is one integer per environment: the index of the next
    task to draw. ``task(i)`` must return the same task for the same ``i`` after a restart.
    """

    @abc.abstractmethod
    def task(self, index: int) -> Task:
        """The ``index``-th task (cycles over finite datasets)."""
