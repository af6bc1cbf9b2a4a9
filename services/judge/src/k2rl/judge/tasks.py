"""Tasks the judge scores, as plain data (converted from the contract in ``convert.py``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from k2rl.judge.critic.prompt import Turn
from k2rl.judge.critic.rubrics import Rubric
from k2rl.judge.verifiers.code import CodeTask
from k2rl.judge.verifiers.instruction import Constraint
from k2rl.judge.verifiers.tool_use import Call, Checkpoint


@dataclass(frozen=True)
class MathTask:
    answer: str
    relative_tolerance: float = 0.0


@dataclass(frozen=True)
class InstructionTask:
    constraints: list[Constraint]


@dataclass(frozen=True)
class ExactMatchTask:
    accepted: list[str]
    case_sensitive: bool = False


@dataclass(frozen=True)
class Game24Task:
    numbers: list[int]
    target: int = 24


@dataclass(frozen=True)
class SudokuTask:
    grid: str


@dataclass(frozen=True)
class CryptarithmTask:
    equation: str


@dataclass(frozen=True)
class MorseTask:
    text: str
    decode: bool


@dataclass(frozen=True)
class RubricTask:
    """RUBRIC: ranked against sibling samples by the critic, or compared with a reference."""

    rubrics: list[Rubric]
    reference_response: str = ""


@dataclass(frozen=True)
class SafetyTask:
    """SAFETY: the critic checks the response against each rubric (attack succeeded or not)."""

    rubrics: list[Rubric]


@dataclass(frozen=True)
class AgenticTask:
    checkpoints: list[Checkpoint]
    expected_state: dict[str, Any]


Task = (MathTask | CodeTask | InstructionTask | ExactMatchTask | Game24Task | SudokuTask | CryptarithmTask
        | MorseTask | RubricTask | SafetyTask | AgenticTask)


@dataclass(frozen=True)
class ScoreItem:
    """One response to score, with everything its verifier may look at."""

    task: Task
    response: str
    task_id: str = ""
    prompt: str = ""
    context: list[Turn] = field(default_factory=list)
    tool_calls: list[Call] = field(default_factory=list)
    final_state: dict[str, str] = field(default_factory=dict)
    skip_hack_check: bool = False

    @property
    def group_key(self) -> str:
        """Samples of the same prompt share this (ranking, critic data)."""
        return self.task_id or self.prompt
