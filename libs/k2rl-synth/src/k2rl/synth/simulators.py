"""Stage 3 simulators: the user (an LLM persona with its own style) and the tools.

The tool simulator is K2's "world model" (report 3.1.1): an LLM that executes a tool call
against the episode's persistent state, returns the tool's result and the state changes,
which are applied so later calls see them. Deterministic guards run first: an unknown tool
or arguments that fail the tool's JSON Schema get an error result without asking the model
and without touching the state. Controlled stochasticity: each call's *outcome* (success,
partial failure, edge case) is drawn from a seeded RNG keyed by (seed, call number), so an
episode replays identically, and survives a snapshot/restore in the middle.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from k2rl.synth.llm import ChatFn
from k2rl.synth.replies import extract_json_object
from k2rl.synth.tools import ToolSpec

OUTCOMES = ("success", "partial_failure", "edge_case")
OUTCOME_INSTRUCTIONS = {
    "success": "The call succeeds: return a realistic, complete result.",
    "partial_failure": "The call partly fails (e.g. some items missing, a timeout on one part): say so in the "
                       "result and apply only the changes that did happen.",
    "edge_case": "The call hits an edge case (empty result, boundary value, ambiguous input): return that "
                 "realistically.",
}
TOOL_SYSTEM = ("You are the world model behind a software tool. Given the environment state and a tool "
               "call, reply with JSON only: {\"result\": <the tool's output>, \"state_updates\": "
               "{key: new JSON value, or null to delete}}.")
USER_SYSTEM = "You are simulating a user who talks to an AI assistant."
DONE_MARKER = "[DONE]"

# Users of the simulator: the style a reply is written in varies the data (K2: diverse users).
USER_PERSONAS: tuple[dict[str, str], ...] = (
    {"name": "busy professional", "style": "terse, one sentence, no pleasantries"},
    {"name": "curious student", "style": "friendly, asks a follow-up question when something is unclear"},
    {"name": "non-native speaker", "style": "simple words, short sentences, occasionally imprecise"},
)


@dataclass(frozen=True)
class OutcomeWeights:
    success: float = 0.7
    partial_failure: float = 0.15
    edge_case: float = 0.15

    def __post_init__(self) -> None:
        weights = self.as_tuple()
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"outcome weights must be >= 0 with a positive sum, got {weights}")

    def as_tuple(self) -> tuple[float, float, float]:
        return (self.success, self.partial_failure, self.edge_case)


@dataclass(frozen=True)
class ToolCallRequest:
    call_id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolResult:
    call_id: str
    name: str
    content: str  # what the agent sees in the tool message
    outcome: str  # one of OUTCOMES, or "unknown_tool", "invalid_arguments", "simulator_error"
    state_changes: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "name": self.name, "content": self.content, "outcome": self.outcome,
                "state_changes": self.state_changes}


def draw_outcome(seed: int, call_number: int, weights: OutcomeWeights) -> str:
    """The outcome of call ``call_number`` of an episode seeded ``seed``: same inputs, same outcome."""
    return random.Random(f"outcome/{seed}/{call_number}").choices(OUTCOMES, weights=weights.as_tuple())[0]


def apply_state_updates(state: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """New state with ``updates`` applied (a None value deletes the key); ``state`` is not modified."""
    new = copy.deepcopy(state)
    for key, value in updates.items():
        if value is None:
            new.pop(key, None)
        else:
            new[key] = value
    return new


class ToolSimulator:
    """Executes one episode's tool calls against its persistent state."""

    def __init__(self, chat: ChatFn, tools: Sequence[ToolSpec], *, seed: int,
                 initial_state: dict[str, Any] | None = None, weights: OutcomeWeights | None = None) -> None:
        self._chat = chat
        self.tools = {tool.name: tool for tool in tools}
        self.seed = seed
        self.weights = weights or OutcomeWeights()
        self.state: dict[str, Any] = copy.deepcopy(initial_state or {})
        self.calls_made = 0

    async def execute(self, call: ToolCallRequest) -> ToolResult:
        call_number = self.calls_made
        self.calls_made += 1
        tool = self.tools.get(call.name)
        if tool is None:
            return ToolResult(call.call_id, call.name, f"error: unknown tool {call.name!r}; available: "
                              f"{', '.join(sorted(self.tools))}", "unknown_tool")
        problem = schema_problem(tool, call.arguments)
        if problem is not None:
            return ToolResult(call.call_id, call.name, f"error: invalid arguments: {problem}", "invalid_arguments")
        outcome = draw_outcome(self.seed, call_number, self.weights)
        reply = extract_json_object(await self._chat(self.world_model_prompt(tool, call, outcome)))
        if reply is None or "result" not in reply or not isinstance(reply.get("state_updates", {}), dict):
            return ToolResult(call.call_id, call.name, "error: the tool returned an unreadable response",
                              "simulator_error")
        updates = reply.get("state_updates") or {}
        self.state = apply_state_updates(self.state, updates)
        content = reply["result"] if isinstance(reply["result"], str) else json.dumps(reply["result"])
        return ToolResult(call.call_id, call.name, content, outcome, updates)

    def world_model_prompt(self, tool: ToolSpec, call: ToolCallRequest, outcome: str) -> list[dict[str, str]]:
        return [{"role": "system", "content": TOOL_SYSTEM},
                {"role": "user", "content": (
                    f"Tool: {tool.name}: {tool.description}\nState: {json.dumps(self.state, sort_keys=True)}\n"
                    f"Call: {tool.name}({json.dumps(call.arguments, sort_keys=True)})\n"
                    f"Outcome to simulate: {outcome}. {OUTCOME_INSTRUCTIONS[outcome]}")}]

    def snapshot(self) -> dict[str, Any]:
        return {"state": copy.deepcopy(self.state), "calls_made": self.calls_made, "seed": self.seed}

    def restore(self, snapshot: dict[str, Any]) -> None:
        self.state = copy.deepcopy(snapshot["state"])
        self.calls_made = int(snapshot["calls_made"])
        self.seed = int(snapshot["seed"])


def schema_problem(tool: ToolSpec, arguments: dict[str, Any]) -> str | None:
    """Why ``arguments`` do not fit the tool's schema, or None if they do."""
    validator = jsonschema.validators.validator_for(tool.parameters, default=jsonschema.Draft202012Validator)
    error = jsonschema.exceptions.best_match(validator(tool.parameters).iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{where}: {error.message}"


class UserSimulator:
    """The user side of an episode: a persona pursuing the task's goal in its own style."""

    def __init__(self, chat: ChatFn, *, goal: str, persona: dict[str, str]) -> None:
        self._chat = chat
        self.goal = goal
        self.persona = persona

    def _system(self) -> str:
        return (f"{USER_SYSTEM} You are a {self.persona['name']}; style: {self.persona['style']}. "
                f"Your goal: {self.goal} Write only the user's next message. When the goal is met or "
                f"cannot be met, reply exactly {DONE_MARKER}.")

    async def opening(self) -> str:
        """The first user message; falls back to the goal itself if the model says nothing usable."""
        text = (await self._chat([{"role": "system", "content": self._system()},
                                  {"role": "user", "content": "Write your opening message to the assistant."}]))
        text = text.strip()
        return self.goal if not text or DONE_MARKER in text else text

    async def reply(self, transcript: Sequence[dict[str, Any]]) -> str | None:
        """The next user message, or None when the user is done."""
        lines = "\n".join(f"{m['role']}: {m.get('content') or ''}" for m in transcript
                          if m["role"] in ("user", "assistant"))
        text = (await self._chat([{"role": "system", "content": self._system()},
                                  {"role": "user", "content": f"Conversation so far:\n{lines}\n\n"
                                                              f"Your next message (or {DONE_MARKER}):"}])).strip()
        return None if not text or DONE_MARKER in text else text


def pick_user_persona(seed: int, task_id: str) -> dict[str, str]:
    return USER_PERSONAS[random.Random(f"user/{seed}/{task_id}").randrange(len(USER_PERSONAS))]
