"""A tiny verifiable task the k2-nano preset can learn on two CPU cores: integer arithmetic.

Prompts are ``"<a><op><b>="`` and the answer is the result followed by end of sequence,
so one byte-level model can be pretrained on the same format (``corpus``) and then
improved by RL on the exact-match reward. Tasks are a pure function of (seed, index), so
the dataset cursor is just the index and a restarted run draws the same prompts.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from k2rl.controller.environments.base import Environment, StepResult, Task, TaskSource

_LEADING_INT = re.compile(r"\s*(-?\d+)")


@dataclass(frozen=True)
class ArithmeticOptions:
    """``max_operand``: operands are drawn from [0, max_operand]; ``operators`` from "+-*"."""

    max_operand: int = 20
    operators: str = "+"
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict[str, str], seed: int) -> ArithmeticOptions:
        parsed = cls(int(options.get("max_operand", cls.max_operand)),
                     options.get("operators", cls.operators), int(options.get("seed", seed)))
        if parsed.max_operand < 1:
            raise ValueError("arithmetic option max_operand must be >= 1")
        if not parsed.operators or set(parsed.operators) - set("+-*"):
            raise ValueError(f"arithmetic option operators must use + - * only, got {parsed.operators!r}")
        return parsed


def solve(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


class ArithmeticTasks(TaskSource):
    """Deterministic problem ``index`` of a seeded stream; ``held_out`` gives a disjoint stream."""

    def __init__(self, options: ArithmeticOptions, *, held_out: bool = False) -> None:
        self.options = options
        self._stream = "eval" if held_out else "train"

    def task(self, index: int) -> Task:
        rng = random.Random(f"{self.options.seed}/{self._stream}/{index}")
        a = rng.randint(0, self.options.max_operand)
        b = rng.randint(0, self.options.max_operand)
        op = rng.choice(self.options.operators)
        return Task(f"arith-{self._stream}-{index}", f"{a}{op}{b}=", {"answer": str(solve(a, op, b))})


def corpus(options: ArithmeticOptions, documents: int, seed: int) -> list[str]:
    """Worked examples ``"a+b=c"`` for pretraining, drawn from a stream RL never prompts."""
    rng = random.Random(f"{options.seed}/pretrain/{seed}")
    lines = []
    for _ in range(documents):
        a, b = rng.randint(0, options.max_operand), rng.randint(0, options.max_operand)
        op = rng.choice(options.operators)
        lines.append(f"{a}{op}{b}={solve(a, op, b)}")
    return lines


def parse_answer(text: str) -> str | None:
    match = _LEADING_INT.match(text)
    return match.group(1) if match else None


class ArithmeticEnvironment(Environment):
    """Single turn; reward 1 for the exact result at the start of the response, else 0."""

    name = "arithmetic"

    def format_prompt(self, task: Task) -> str:
        return task.prompt

    def evaluate(self, task: Task, action: str) -> StepResult:
        answer = parse_answer(action)
        passed = answer == task.reference["answer"]
        return StepResult("", 1.0 if passed else 0.0, True,
                          {"passed": passed, "verifier": "exact_integer", "parsed": answer})
