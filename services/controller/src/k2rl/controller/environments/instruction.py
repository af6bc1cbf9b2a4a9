"""Instruction following with verifiable format constraints (K2 section 3.1.1, IFEval-style).

Each task asks for a short text on a topic under one to a few constraints a program can
check: a word count, keywords that must appear, JSON output, an exact number of bullet
points, all lowercase or all capitals. The reward is the judge's deterministic
INSTRUCTION_FOLLOWING verdict (its IFEval checkers: the fraction of constraints met;
passed only when all are), so the checks live in one place, the judge.

Tasks are generated as a pure function of (seed, index), like arithmetic, or read from a
JSONL dataset whose rows are ``{"prompt": "...", "constraints": [{"checker": "...",
"arguments": {...}, "description": "..."}]}``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

from k2rl.controller.environments.base import Task, TaskSource
from k2rl.controller.environments.judged import JudgedEnvironment
from k2rl.judge.v1 import judge_pb2

TOPICS = ("the ocean", "a rainy city", "learning to cook", "old maps", "a night train", "honeybees",
          "the first snow", "a lighthouse keeper", "mountain trails", "a quiet library", "desert stars",
          "a village market", "paper airplanes", "autumn orchards", "a robot gardener", "river stones")
KEYWORDS = ("blue", "window", "silver", "whisper", "bread", "compass", "lantern", "harbor", "garden", "echo",
            "thunder", "copper", "maple", "ribbon", "signal", "velvet")
KINDS = ("words", "keywords", "json", "bullets", "case")
# JSON output cannot also be a markdown bullet list.
_EXCLUSIVE = {frozenset({"json", "bullets"})}


@dataclass(frozen=True)
class Constraint:
    checker: str
    arguments: dict[str, Any]
    description: str

    def to_json(self) -> dict[str, Any]:
        return {"checker": self.checker, "arguments": self.arguments, "description": self.description}


@dataclass(frozen=True)
class InstructionOptions:
    """``constraints``: most constraints per task (1 to 3); ``kinds``: which of KINDS to draw from."""

    constraints: int = 2
    kinds: tuple[str, ...] = KINDS
    seed: int = 0

    @classmethod
    def from_options(cls, options: dict[str, str], seed: int) -> InstructionOptions:
        kinds = tuple(k.strip() for k in options.get("kinds", ",".join(KINDS)).split(",") if k.strip())
        unknown = set(kinds) - set(KINDS)
        if unknown or not kinds:
            raise ValueError(f"instruction_following option kinds must be a comma list of {', '.join(KINDS)}; "
                             f"got {options.get('kinds')!r}")
        parsed = cls(int(options.get("constraints", cls.constraints)), kinds, int(options.get("seed", seed)))
        if not 1 <= parsed.constraints <= 3:
            raise ValueError("instruction_following option constraints must be 1, 2 or 3")
        return parsed


def _constraint(kind: str, rng: random.Random) -> Constraint:
    if kind == "words":
        relation, count = rng.choice((("at most", rng.randint(5, 30)), ("at least", rng.randint(3, 12))))
        return Constraint("length_constraints:number_words", {"relation": relation, "num_words": count},
                          f"Use {relation} {count} words.")
    if kind == "keywords":
        words = rng.sample(KEYWORDS, rng.randint(1, 2))
        return Constraint("keywords:existence", {"keywords": words},
                          f"Include the word{'s' if len(words) > 1 else ''} {' and '.join(words)}.")
    if kind == "json":
        return Constraint("detectable_format:json_format", {}, "Answer with valid JSON only.")
    if kind == "bullets":
        count = rng.randint(2, 4)
        return Constraint("detectable_format:number_bullet_lists", {"num_bullets": count},
                          f"Answer with exactly {count} markdown bullet points (lines starting with '* ').")
    if rng.random() < 0.5:
        return Constraint("change_case:english_lowercase", {}, "Write everything in lowercase letters.")
    return Constraint("change_case:english_capital", {}, "Write everything in capital letters.")


def _kinds(options: InstructionOptions, rng: random.Random) -> list[str]:
    """One to ``options.constraints`` distinct kinds, never two that exclude each other."""
    wanted = rng.randint(1, min(options.constraints, len(options.kinds)))
    chosen: list[str] = []
    for kind in rng.sample(options.kinds, len(options.kinds)):
        if len(chosen) == wanted:
            break
        if not any(frozenset({kind, other}) in _EXCLUSIVE for other in chosen):
            chosen.append(kind)
    return chosen


class InstructionTasks(TaskSource):
    """Task ``index`` of a seeded stream; ``held_out`` gives a disjoint stream."""

    def __init__(self, options: InstructionOptions, *, held_out: bool = False) -> None:
        self.options = options
        self._stream = "eval" if held_out else "train"

    def task(self, index: int) -> Task:
        rng = random.Random(f"{self.options.seed}/instruction/{self._stream}/{index}")
        topic = rng.choice(TOPICS)
        constraints = [_constraint(kind, rng) for kind in _kinds(self.options, rng)]
        prompt = f"Write about {topic}. " + " ".join(c.description for c in constraints)
        return Task(f"if-{self._stream}-{index}", prompt, {"constraints": [c.to_json() for c in constraints]})


def check_dataset_row(reference: dict[str, Any], where: str) -> None:
    """A dataset row's constraints must be a non-empty list of {checker, arguments?, description?}."""
    constraints = reference.get("constraints")
    if not isinstance(constraints, list) or not constraints:
        raise ValueError(f"{where}: expected a non-empty 'constraints' list")
    for number, item in enumerate(constraints):
        if not isinstance(item, dict) or not (item.get("checker") or item.get("description")):
            raise ValueError(f"{where}: constraints[{number}] needs a 'checker' (or a 'description' for the critic)")


class InstructionFollowingEnvironment(JudgedEnvironment):
    """Single turn; reward = the judge's deterministic checks of the task's constraints."""

    name = "instruction_following"

    def task_spec(self, task: Task) -> judge_pb2.TaskSpec:
        constraints = [
            judge_pb2.InstructionConstraint(checker=c.get("checker", ""),
                                            arguments_json=json.dumps(c.get("arguments", {})),
                                            description=c.get("description", ""))
            for c in task.reference["constraints"]
        ]
        return judge_pb2.TaskSpec(kind=judge_pb2.TASK_KIND_INSTRUCTION_FOLLOWING, task_id=task.task_id,
                                  prompt=task.prompt,
                                  instruction=judge_pb2.InstructionReference(constraints=constraints))
