"""Stage 3: multi-turn episodes between the simulated user, the agent model and the tools.

The agent's tool calls are read from either format a model may use: K2's tool-call tokens
in the text (``<|tool_calls_section_begin|>...``, parsed by ``k2rl.models.chat``) and
OpenAI-style structured ``tool_calls``. Every call is re-identified as
``functions.{name}:{n}`` with ``n`` counting over the dialog (K2's id scheme), so the same
trajectory renders identically in OpenAI JSON and in K2 tokens. A malformed call (arguments
that are not a JSON object, an id without a tool name, an unterminated call) is answered
with an error tool message, as a real runtime would, and counted.

Hybrid real execution: coding tasks are not simulated; the agent's final program runs in
the sandbox service against the task's tests and the pass rate is recorded.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from k2rl.models.chat import TOOL_CALL_BEGIN, TOOL_CALLS_BEGIN, TOOL_CALLS_END, parse_tool_calls
from k2rl.synth.agents import AgentSpec
from k2rl.synth.llm import ChatFn, LLMClient
from k2rl.synth.replies import extract_json_object
from k2rl.synth.simulators import (
    OutcomeWeights,
    ToolCallRequest,
    ToolSimulator,
    UserSimulator,
    pick_user_persona,
)
from k2rl.synth.tasks import CodeTest, SynthTask


@dataclass(frozen=True)
class ParsedCall:
    call_id: str
    name: str
    arguments: dict[str, Any]

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.call_id, "type": "function",
                "function": {"name": self.name, "arguments": json.dumps(self.arguments)}}


@dataclass(frozen=True)
class MalformedCall:
    call_id: str
    name: str
    raw_arguments: str
    reason: str

    def to_openai(self) -> dict[str, Any]:
        return {"id": self.call_id, "type": "function",
                "function": {"name": self.name, "arguments": self.raw_arguments}}


@dataclass(frozen=True)
class AssistantTurn:
    content: str
    calls: tuple[ParsedCall, ...] = ()
    malformed: tuple[MalformedCall, ...] = ()

    @property
    def call_count(self) -> int:
        return len(self.calls) + len(self.malformed)

    def message(self) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": self.content}
        calls = [c.to_openai() for c in self.calls] + [m.to_openai() for m in self.malformed]
        if calls:
            message["tool_calls"] = calls
        return message


def _decode_arguments(raw: Any) -> tuple[dict[str, Any] | None, str]:
    """(arguments, reason): arguments None when ``raw`` is not a JSON object (text or dict)."""
    if isinstance(raw, dict):
        return raw, ""
    if not isinstance(raw, str):
        return None, f"arguments must be a JSON object, got {type(raw).__name__}"
    try:
        value = json.loads(raw) if raw.strip() else {}
    except json.JSONDecodeError as error:
        return None, f"arguments are not valid JSON ({error.msg} at column {error.colno})"
    if not isinstance(value, dict):
        return None, f"arguments must be a JSON object, got {type(value).__name__}"
    return value, ""


def parse_assistant_turn(content: str, tool_calls: list[dict[str, Any]] | None = None, *,
                         first_index: int = 0) -> AssistantTurn:
    """The agent's text and calls, from K2 tool-call tokens in ``content`` and/or OpenAI ``tool_calls``.

    Calls are numbered from ``first_index`` (the dialog's running call counter).
    """
    text, k2_calls = parse_tool_calls(content)
    raw: list[tuple[str, Any, str]] = [(c.name, c.arguments, "") for c in k2_calls]
    raw += [("", "", "K2 tool call without a functions.{name}:{n} id, or not terminated")] * _dropped_k2_calls(
        content, len(k2_calls))
    for index, call in enumerate(tool_calls or []):
        function = call.get("function") if isinstance(call, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raw.append(("", json.dumps(call)[:200], f"tool_calls[{index}] has no function name"))
        else:
            raw.append((name, function.get("arguments", ""), ""))
    calls: list[ParsedCall] = []
    malformed: list[MalformedCall] = []
    for offset, (name, arguments, reason) in enumerate(raw):
        call_id = f"functions.{name or 'unknown'}:{first_index + offset}"
        decoded, why = (None, reason) if reason else _decode_arguments(arguments)
        if decoded is None:
            text_args = arguments if isinstance(arguments, str) else json.dumps(arguments)
            malformed.append(MalformedCall(call_id, name or "unknown", text_args, why))
        else:
            calls.append(ParsedCall(call_id, name, decoded))
    return AssistantTurn(text.strip(), tuple(calls), tuple(malformed))


def json_tool_calls_in_text(text: str) -> list[dict[str, Any]]:
    """OpenAI-style calls a model wrote as JSON text: ``{"tool_calls": [...]}`` or one
    ``{"name": ..., "arguments": ...}`` object (models without a tool-call parser server-side)."""
    data = extract_json_object(text)
    if data is None:
        return []
    if isinstance(data.get("tool_calls"), list):
        return [call if isinstance(call, dict) and "function" in call else {"type": "function", "function": call}
                for call in data["tool_calls"]]
    if isinstance(data.get("name"), str) and "arguments" in data:
        arguments = data["arguments"]
        return [{"type": "function", "function": {
            "name": data["name"], "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)}}]
    return []


def parse_text_turn(text: str, *, first_index: int = 0) -> AssistantTurn:
    """A turn known only as text (e.g. decoded tokens): K2 tool-call tokens, else JSON calls in the text."""
    turn = parse_assistant_turn(text, first_index=first_index)
    if turn.call_count:
        return turn
    json_calls = json_tool_calls_in_text(text)
    return parse_assistant_turn(text, json_calls, first_index=first_index) if json_calls else turn


def _dropped_k2_calls(content: str, parsed: int) -> int:
    """K2 calls ``parse_tool_calls`` skipped: begin markers in the section beyond those it parsed."""
    start = content.find(TOOL_CALLS_BEGIN)
    if start == -1:
        return 0
    end = content.find(TOOL_CALLS_END, start)
    section = content[start:] if end == -1 else content[start:end]
    return max(0, section.count(TOOL_CALL_BEGIN) - parsed)


# ---- sandbox execution of coding tasks ---------------------------------------------------

_CODE_BLOCK = re.compile(r"```(?:python|py)?\s*\n(.*?)```", re.DOTALL)


def extract_code(text: str) -> str | None:
    """The last fenced code block of ``text`` (the agent's final program), or None."""
    blocks = _CODE_BLOCK.findall(text)
    return blocks[-1] if blocks else None


class SandboxRunner:
    """Runs programs against tests in the sandbox service (its gRPC stub, called off the event loop)."""

    def __init__(self, stub: Any, *, timeout_s: float = 60.0, wall_time_ms: int = 5000) -> None:
        self._stub = stub
        self._timeout_s = timeout_s
        self._wall_time_ms = wall_time_ms

    async def run_tests(self, code: str | None, tests: tuple[CodeTest, ...]) -> dict[str, Any]:
        if code is None:
            return {"status": "no_code", "passed": 0, "total": len(tests), "pass_rate": 0.0}
        from k2rl.sandbox.v1 import sandbox_pb2

        request = sandbox_pb2.ExecuteRequest(
            language=sandbox_pb2.LANGUAGE_PYTHON, code=code,
            limits=sandbox_pb2.ResourceLimits(wall_time_ms=self._wall_time_ms),
            test_cases=[sandbox_pb2.TestCase(name=t.name, stdin=t.stdin.encode(),
                                             expected_stdout=t.expected_stdout.encode()) for t in tests])
        reply = await asyncio.to_thread(self._stub.Execute, request, timeout=self._timeout_s)
        passed = sum(1 for result in reply.test_results if result.passed)
        return {"status": sandbox_pb2.ExecutionStatus.Name(reply.status).removeprefix("EXECUTION_STATUS_").lower(),
                "passed": passed, "total": len(tests), "pass_rate": passed / len(tests) if tests else 0.0}


# ---- the episode loop ---------------------------------------------------------------------


@dataclass(frozen=True)
class EpisodeLimits:
    max_agent_turns: int = 6  # assistant messages, tool rounds included
    max_user_turns: int = 2  # user messages, the opening one included


@dataclass
class Trajectory:
    trajectory_id: str
    task_id: str
    agent_id: str
    domain: str
    kind: str
    attempt: int
    seed: int
    user_persona: dict[str, str]
    messages: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_results: list[dict[str, Any]] = field(default_factory=list)
    final_state: dict[str, Any] = field(default_factory=dict)
    malformed_calls: int = 0
    finished: bool = False  # ended by the user or a final answer, not by the turn limit
    execution: dict[str, Any] | None = None  # coding tasks: sandbox test results

    def final_response(self) -> str:
        return next((str(m.get("content") or "") for m in reversed(self.messages) if m["role"] == "assistant"), "")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def episode_seed(seed: int, task_id: str, attempt: int) -> int:
    digest = hashlib.sha256(f"{seed}/{task_id}/{attempt}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass
class EpisodeModels:
    """Who plays which part: the agent model, the user simulator, the tool simulator."""

    agent: LLMClient
    user: ChatFn
    tools: ChatFn
    outcome_weights: OutcomeWeights = field(default_factory=OutcomeWeights)
    sandbox: SandboxRunner | None = None


async def run_episode(task: SynthTask, agent: AgentSpec, models: EpisodeModels, *, seed: int, attempt: int,
                      limits: EpisodeLimits = EpisodeLimits()) -> Trajectory:
    """Roll out one trajectory of ``task`` with ``agent``; deterministic given the models' replies."""
    ep_seed = episode_seed(seed, task.task_id, attempt)
    persona = pick_user_persona(ep_seed, task.task_id)
    user = UserSimulator(models.user, goal=task.instruction, persona=persona)
    simulator = ToolSimulator(models.tools, agent.tools, seed=ep_seed, initial_state=task.initial_state,
                              weights=models.outcome_weights)
    trajectory = Trajectory(f"{task.task_id}/a{attempt}", task.task_id, agent.agent_id, task.domain, task.kind,
                            attempt, ep_seed, persona, tools=agent.openai_tools())
    messages = trajectory.messages
    messages += [{"role": "system", "content": agent.system_prompt()},
                 {"role": "user", "content": await user.opening()}]
    user_turns, call_counter = 1, 0
    for _ in range(limits.max_agent_turns):
        completion = await models.agent.complete(messages, tools=trajectory.tools, seed=ep_seed)
        turn = parse_assistant_turn(completion.content, completion.tool_calls, first_index=call_counter)
        call_counter += turn.call_count
        messages.append(turn.message())
        if turn.call_count:
            await _answer_calls(turn, simulator, trajectory)
            continue
        if user_turns >= limits.max_user_turns:
            trajectory.finished = True
            break
        follow_up = await user.reply(messages)
        if follow_up is None:
            trajectory.finished = True
            break
        messages.append({"role": "user", "content": follow_up})
        user_turns += 1
    trajectory.final_state = simulator.state
    if task.kind == "coding" and models.sandbox is not None:
        trajectory.execution = await models.sandbox.run_tests(extract_code(trajectory.final_response()), task.tests)
    return trajectory


async def _answer_calls(turn: AssistantTurn, simulator: ToolSimulator, trajectory: Trajectory) -> None:
    for call in turn.calls:
        result = await simulator.execute(ToolCallRequest(call.call_id, call.name, call.arguments))
        trajectory.tool_results.append(result.to_dict())
        trajectory.messages.append({"role": "tool", "tool_call_id": call.call_id, "name": call.name,
                                    "content": result.content})
    for bad in turn.malformed:
        trajectory.malformed_calls += 1
        trajectory.tool_results.append({"call_id": bad.call_id, "name": bad.name, "outcome": "malformed_call",
                                        "content": bad.reason, "state_changes": {}})
        trajectory.messages.append({"role": "tool", "tool_call_id": bad.call_id, "name": bad.name,
                                    "content": f"error: malformed tool call: {bad.reason}"})
