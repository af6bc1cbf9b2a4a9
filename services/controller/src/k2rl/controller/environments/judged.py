"""Environments whose reward comes from the judge service: single-turn math and code.

The judge owns verification (math equivalence, unit tests in the sandbox), so these
environments only turn a task into a ``TaskSpec`` and the judge's verdict into a reward.
Tasks come from JSONL files, one object per line:

- math: ``{"prompt": "...", "answer": "42"}`` (optional ``"id"``, ``"relative_tolerance"``)
- code: ``{"prompt": "...", "tests": [{"stdin": "...", "expected_stdout": "..."}]}``
"""

from __future__ import annotations

import abc
import json
import random
from pathlib import Path
from typing import Any

from k2rl.controller.environments.base import Environment, StepResult, Task, TaskSource
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc
from k2rl.sandbox.v1 import sandbox_pb2


class JsonlTasks(TaskSource):
    """Tasks of a JSONL file, in a fresh seeded order each epoch (the cursor keeps counting)."""

    def __init__(self, path: str | Path, seed: int) -> None:
        self.path = Path(path)
        lines = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not lines:
            raise ValueError(f"dataset {self.path} has no tasks")
        self._rows: list[dict[str, Any]] = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{self.path}:{number}: not JSON ({error.msg})") from None
            if not isinstance(row, dict) or "prompt" not in row:
                raise ValueError(f"{self.path}:{number}: expected an object with a 'prompt'")
            self._rows.append(row)
        self.seed = seed

    def __len__(self) -> int:
        return len(self._rows)

    def task(self, index: int) -> Task:
        epoch, position = divmod(index, len(self._rows))
        order = list(range(len(self._rows)))
        random.Random(f"{self.seed}/{epoch}").shuffle(order)
        row = self._rows[order[position]]
        reference = {k: v for k, v in row.items() if k not in {"prompt", "id"}}
        return Task(str(row.get("id", f"{self.path.stem}-{order[position]}")), row["prompt"], reference)


class JudgedEnvironment(Environment):
    """Single turn, scored by ``JudgeService.Score``."""

    def __init__(self, judge: judge_pb2_grpc.JudgeServiceStub, timeout_s: float = 60.0) -> None:
        super().__init__()
        self._judge = judge
        self._timeout_s = timeout_s

    def format_prompt(self, task: Task) -> str:
        return task.prompt

    @abc.abstractmethod
    def task_spec(self, task: Task) -> judge_pb2.TaskSpec:
        """The judge's view of ``task``."""

    def evaluate(self, task: Task, action: str) -> StepResult:
        response = self._judge.Score(judge_pb2.ScoreRequest(task=self.task_spec(task), response=action),
                                     timeout=self._timeout_s)
        info: dict[str, Any] = {"passed": response.passed, "verifier": response.verifier}
        if response.HasField("error") and response.error.code:
            info["error"] = f"{response.error.code}: {response.error.message}"
        return StepResult("", response.reward, True, info)


class MathEnvironment(JudgedEnvironment):
    name = "math"

    def task_spec(self, task: Task) -> judge_pb2.TaskSpec:
        return judge_pb2.TaskSpec(
            kind=judge_pb2.TASK_KIND_MATH, task_id=task.task_id, prompt=task.prompt,
            math=judge_pb2.MathReference(answer=str(task.reference["answer"]),
                                         relative_tolerance=float(task.reference.get("relative_tolerance", 0))))


class CodeEnvironment(JudgedEnvironment):
    """Python programs judged by unit tests the judge runs in the sandbox."""

    name = "code"

    def task_spec(self, task: Task) -> judge_pb2.TaskSpec:
        tests = [
            sandbox_pb2.TestCase(name=f"test_{i}", stdin=str(t.get("stdin", "")).encode(),
                                 expected_stdout=str(t["expected_stdout"]).encode())
            for i, t in enumerate(task.reference.get("tests", []))
        ]
        return judge_pb2.TaskSpec(
            kind=judge_pb2.TASK_KIND_CODE, task_id=task.task_id, prompt=task.prompt,
            code=judge_pb2.CodeReference(language=sandbox_pb2.LANGUAGE_PYTHON, tests=tests,
                                         partial_credit=bool(task.reference.get("partial_credit", False))))
