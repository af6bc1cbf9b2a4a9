"""Stage 2b: tasks for each agent, from simple to complex, each with an explicit rubric.

K2 report 3.1.1: "each task is paired with an explicit rubric that specifies success
criteria, expected tool-use patterns, and evaluation checkpoints". The rubric is typed
(``Rubric``) and validated against the agent's tools, so every task the pipeline keeps
can be judged deterministically (checkpoints, expected final state: the judge's AGENTIC
verifier) and by the LLM judge (success criteria).

Two kinds: ``tool_use`` (judged on the conversation, tool calls and final world state) and
``coding`` (the agent's final code is run for real in the sandbox against the task's tests;
hybrid real execution). When the LLM's task reply is unusable, a template task built from
the agent's tool schemas stands in (``origin="template"``).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from k2rl.core.errors import InvalidArgument
from k2rl.synth.agents import AgentSpec
from k2rl.synth.llm import ChatFn
from k2rl.synth.replies import extract_json_object

DIFFICULTIES = ("simple", "moderate", "complex")
KINDS = ("tool_use", "coding")
# Tool calls a task of each difficulty asks for (the template tasks use exactly these).
CALLS_PER_DIFFICULTY = {"simple": 1, "moderate": 2, "complex": 3}

TASK_SYSTEM = "You write tool-use tasks with grading rubrics for training data. Reply with JSON only."
CODING_SYSTEM = "You write small programming tasks with stdin/stdout tests. Reply with JSON only."

# Stand-ins for unusable coding-task replies: tiny stdin -> stdout programs.
CODING_CATALOGUE: tuple[dict[str, Any], ...] = (
    {"instruction": "Write a Python program that reads an integer n from stdin and prints 2*n.",
     "tests": [{"stdin": "3\n", "expected_stdout": "6\n"}, {"stdin": "-4\n", "expected_stdout": "-8\n"}]},
    {"instruction": "Write a Python program that reads a line and prints it reversed.",
     "tests": [{"stdin": "abc\n", "expected_stdout": "cba\n"}, {"stdin": "k2\n", "expected_stdout": "2k\n"}]},
    {"instruction": "Write a Python program that reads space-separated integers and prints their sum.",
     "tests": [{"stdin": "1 2 3\n", "expected_stdout": "6\n"}, {"stdin": "10\n", "expected_stdout": "10\n"}]},
)


class TaskError(InvalidArgument, ValueError):
    """A task or rubric that fails validation; the message names the field."""


@dataclass(frozen=True)
class Checkpoint:
    """A tool call the trajectory must (or, ``forbidden``, must not) contain."""

    tool_name: str
    arguments_subset: dict[str, Any] = field(default_factory=dict)
    ordered: bool = False
    forbidden: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(str(data.get("tool_name", "")), dict(data.get("arguments_subset") or {}),
                   bool(data.get("ordered", False)), bool(data.get("forbidden", False)))

    def to_dict(self) -> dict[str, Any]:
        return {"tool_name": self.tool_name, "arguments_subset": self.arguments_subset,
                "ordered": self.ordered, "forbidden": self.forbidden}


@dataclass(frozen=True)
class Rubric:
    success_criteria: tuple[str, ...]
    expected_tool_pattern: tuple[str, ...] = ()  # tool names in the order a good solution calls them
    checkpoints: tuple[Checkpoint, ...] = ()
    expected_final_state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Rubric:
        if not isinstance(data, dict):
            raise TaskError("rubric must be an object", field="rubric")
        criteria = data.get("success_criteria") or ()
        if isinstance(criteria, str):
            criteria = (criteria,)
        return cls(tuple(str(c) for c in criteria), tuple(str(t) for t in data.get("expected_tool_pattern") or ()),
                   tuple(Checkpoint.from_dict(c) for c in data.get("checkpoints") or () if isinstance(c, dict)),
                   dict(data.get("expected_final_state") or {}))

    def to_dict(self) -> dict[str, Any]:
        return {"success_criteria": list(self.success_criteria),
                "expected_tool_pattern": list(self.expected_tool_pattern),
                "checkpoints": [c.to_dict() for c in self.checkpoints],
                "expected_final_state": self.expected_final_state}


@dataclass(frozen=True)
class CodeTest:
    name: str
    stdin: str
    expected_stdout: str


@dataclass(frozen=True)
class SynthTask:
    task_id: str
    agent_id: str
    domain: str
    difficulty: str
    kind: str
    instruction: str  # what the simulated user wants, in the user's words
    rubric: Rubric
    initial_state: dict[str, Any] = field(default_factory=dict)
    tests: tuple[CodeTest, ...] = ()  # coding tasks
    origin: str = "llm"  # "llm", "template" or "catalogue"

    def to_dict(self) -> dict[str, Any]:
        return {"task_id": self.task_id, "agent_id": self.agent_id, "domain": self.domain,
                "difficulty": self.difficulty, "kind": self.kind, "instruction": self.instruction,
                "rubric": self.rubric.to_dict(), "initial_state": self.initial_state,
                "tests": [t.__dict__ for t in self.tests], "origin": self.origin}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthTask:
        return cls(data["task_id"], data["agent_id"], data["domain"], data["difficulty"], data["kind"],
                   data["instruction"], Rubric.from_dict(data["rubric"]), dict(data.get("initial_state") or {}),
                   tuple(CodeTest(**t) for t in data.get("tests", [])), data.get("origin", "llm"))


def validate_task(task: SynthTask, agent: AgentSpec | None = None) -> SynthTask:
    """Return ``task`` if its rubric is usable for judging, else raise TaskError naming the field."""
    if task.difficulty not in DIFFICULTIES:
        raise TaskError(f"difficulty must be one of {list(DIFFICULTIES)}, got {task.difficulty!r}",
                        field="difficulty")
    if task.kind not in KINDS:
        raise TaskError(f"kind must be one of {list(KINDS)}, got {task.kind!r}", field="kind")
    if not task.instruction.strip():
        raise TaskError("instruction must not be empty", field="instruction")
    criteria = task.rubric.success_criteria
    if not criteria or not all(c.strip() for c in criteria):
        raise TaskError("the rubric needs at least one non-empty success criterion",
                        field="rubric.success_criteria")
    _check_json(task.rubric.expected_final_state, "rubric.expected_final_state")
    _check_json(task.initial_state, "initial_state")
    if task.kind == "coding":
        if not task.tests:
            raise TaskError("a coding task needs at least one test", field="tests")
        return task
    if not any(not c.forbidden for c in task.rubric.checkpoints):
        raise TaskError("a tool_use task needs at least one required (not forbidden) checkpoint",
                        field="rubric.checkpoints")
    if agent is not None:
        known = set(agent.tool_names())
        for index, checkpoint in enumerate(task.rubric.checkpoints):
            if checkpoint.tool_name not in known:
                raise TaskError(f"checkpoint tool {checkpoint.tool_name!r} is not one of the agent's tools "
                                f"{sorted(known)}", field=f"rubric.checkpoints[{index}].tool_name")
        unknown = [name for name in task.rubric.expected_tool_pattern if name not in known]
        if unknown:
            raise TaskError(f"expected_tool_pattern names tools the agent lacks: {unknown}",
                            field="rubric.expected_tool_pattern")
    return task


def _check_json(value: dict[str, Any], field_name: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise TaskError(f"must be JSON-serialisable: {error}", field=field_name) from None


def difficulty_for(index: int, count: int) -> str:
    """Task ``index`` of ``count`` for one agent: a curriculum from simple to complex."""
    return DIFFICULTIES[min(len(DIFFICULTIES) - 1, index * len(DIFFICULTIES) // max(count, 1))]


def task_prompt(agent: AgentSpec, difficulty: str) -> list[dict[str, str]]:
    tools = "\n".join(f"- {t.name}: {t.description} args={json.dumps(t.parameters.get('properties', {}))[:200]}"
                      for t in agent.tools)
    calls = CALLS_PER_DIFFICULTY[difficulty]
    return [{"role": "system", "content": TASK_SYSTEM},
            {"role": "user", "content": (
                f"Agent: {agent.name}, {agent.persona}.\nTools:\n{tools}\n\n"
                f"Write one {difficulty} task (about {calls} tool call(s)) a user could ask this agent, as JSON: "
                '{"instruction": ..., "initial_state": {...}, "rubric": {"success_criteria": [...], '
                '"expected_tool_pattern": [tool names in order], "checkpoints": [{"tool_name": ..., '
                '"arguments_subset": {...}, "ordered": bool, "forbidden": bool}], "expected_final_state": {...}}}')}]


def coding_prompt(agent: AgentSpec) -> list[dict[str, str]]:
    return [{"role": "system", "content": CODING_SYSTEM},
            {"role": "user", "content": (
                f"Write one small Python stdin/stdout programming task for {agent.name} ({agent.expertise}), "
                'as JSON: {"instruction": ..., "tests": [{"stdin": ..., "expected_stdout": ...}]}')}]


def parse_tool_task(reply: str, *, task_id: str, agent: AgentSpec, difficulty: str) -> SynthTask | None:
    """The LLM's task, validated against the agent; None if it is not a usable task."""
    data = extract_json_object(reply)
    if data is None or not isinstance(data.get("instruction"), str):
        return None
    try:
        task = SynthTask(task_id, agent.agent_id, agent.domain, difficulty, "tool_use", data["instruction"],
                         Rubric.from_dict(data.get("rubric") or {}), dict(data.get("initial_state") or {}))
        return validate_task(task, agent)
    except (TaskError, TypeError, ValueError):
        return None


def parse_coding_task(reply: str, *, task_id: str, agent: AgentSpec, difficulty: str) -> SynthTask | None:
    data = extract_json_object(reply)
    if data is None:
        return None
    return _coding_task(data, task_id=task_id, agent=agent, difficulty=difficulty, origin="llm")


def _coding_task(data: dict[str, Any], *, task_id: str, agent: AgentSpec, difficulty: str,
                 origin: str) -> SynthTask | None:
    try:
        tests = tuple(CodeTest(f"test_{i}", str(t["stdin"]), str(t["expected_stdout"]))
                      for i, t in enumerate(data.get("tests") or []))
        rubric = Rubric(("The final answer contains a complete Python program in a ```python block",
                         "The program passes the task's tests"))
        task = SynthTask(task_id, agent.agent_id, "coding", difficulty, "coding", str(data["instruction"]), rubric,
                         tests=tests, origin=origin)
        return validate_task(task, agent)
    except (KeyError, TypeError, TaskError):
        return None


def template_tool_task(*, task_id: str, agent: AgentSpec, difficulty: str, rng: random.Random) -> SynthTask:
    """A task written from the tool schemas alone: call these tools in this order, then report."""
    count = min(CALLS_PER_DIFFICULTY[difficulty], len(agent.tools))
    chosen = rng.sample(list(agent.tools), count)
    steps = "; then ".join(f"{t.description.rstrip('.')} (use {t.name})" for t in chosen)
    rubric = Rubric(
        success_criteria=(f"The assistant calls {', '.join(t.name for t in chosen)} with valid arguments",
                          "The assistant reports the tool results to the user accurately"),
        expected_tool_pattern=tuple(t.name for t in chosen),
        checkpoints=tuple(Checkpoint(t.name, ordered=count > 1) for t in chosen),
    )
    task = SynthTask(task_id, agent.agent_id, agent.domain, difficulty, "tool_use", f"Please help me: {steps}.",
                     rubric, origin="template")
    return validate_task(task, agent)


async def generate_task(chat: ChatFn, agent: AgentSpec, *, task_id: str, difficulty: str, kind: str,
                        seed: int) -> SynthTask:
    """One validated task for ``agent``; falls back to a template/catalogue task when the reply is unusable."""
    rng = random.Random(f"task/{seed}/{task_id}")
    if kind == "coding":
        task = parse_coding_task(await chat(coding_prompt(agent)), task_id=task_id, agent=agent,
                                 difficulty=difficulty)
        if task is None:
            fallback = CODING_CATALOGUE[rng.randrange(len(CODING_CATALOGUE))]
            task = _coding_task(fallback, task_id=task_id, agent=agent, difficulty=difficulty, origin="catalogue")
        assert task is not None  # the catalogue entries are valid
        return task
    task = parse_tool_task(await chat(task_prompt(agent, difficulty)), task_id=task_id, agent=agent,
                           difficulty=difficulty)
    return task or template_tool_task(task_id=task_id, agent=agent, difficulty=difficulty, rng=rng)
