"""Tool-use checkpoints: the trajectory's tool calls and final environment state against the
task rubric's expected calls and end state (K2 §3.1.1, rubric-judged agentic tasks).

A checkpoint matches a call with its tool name and whose arguments contain the
checkpoint's arguments (subset match, JSON values compared structurally). Ordered
checkpoints must match calls after the previous checkpoint's match. Reward = fraction of
checks passed; passed only if all pass.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verdict import Check, Verdict

VERIFIER = "tool_use_checkpoints/1"


@dataclass(frozen=True)
class Call:
    name: str
    arguments: Any  # decoded JSON; None when the model wrote invalid JSON


@dataclass(frozen=True)
class Checkpoint:
    tool_name: str
    arguments_subset: dict[str, Any]
    ordered: bool = False
    forbidden: bool = False


def decode_call(name: str, arguments_json: str) -> Call:
    """Model-written arguments may be invalid JSON; that is a failed match, not an error."""
    try:
        return Call(name, json.loads(arguments_json) if arguments_json.strip() else {})
    except json.JSONDecodeError:
        return Call(name, None)


def parse_checkpoint(tool_name: str, arguments_subset_json: str, ordered: bool, forbidden: bool) -> Checkpoint:
    if not tool_name:
        raise InvalidArgument("a checkpoint needs a tool_name", field="tool_name")
    try:
        subset = json.loads(arguments_subset_json) if arguments_subset_json.strip() else {}
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"not valid JSON: {error}", field="arguments_subset_json") from None
    if not isinstance(subset, dict):
        raise InvalidArgument("must be a JSON object", field="arguments_subset_json")
    return Checkpoint(tool_name, subset, ordered, forbidden)


def parse_state(expected: dict[str, str], field: str) -> dict[str, Any]:
    try:
        return {key: json.loads(value) for key, value in expected.items()}
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"state values must be JSON: {error}", field=field) from None


def _matches(call: Call, checkpoint: Checkpoint) -> bool:
    if call.name != checkpoint.tool_name or not isinstance(call.arguments, dict):
        return False
    return all(key in call.arguments and call.arguments[key] == value
               for key, value in checkpoint.arguments_subset.items())


def _describe(checkpoint: Checkpoint) -> str:
    args = json.dumps(checkpoint.arguments_subset, sort_keys=True) if checkpoint.arguments_subset else ""
    return f"{checkpoint.tool_name}({args})"


def verify(checkpoints: list[Checkpoint], expected_state: dict[str, Any], calls: list[Call],
           final_state: dict[str, str]) -> Verdict:
    if not checkpoints and not expected_state:
        raise InvalidArgument("an AGENTIC task needs tool_checkpoints or expected_final_state", field="rubric")
    checks: list[Check] = []
    cursor = 0  # calls before this index are used up by earlier ordered checkpoints
    for checkpoint in checkpoints:
        name = f"call {_describe(checkpoint)}"
        if checkpoint.forbidden:
            hits = [i for i, call in enumerate(calls) if _matches(call, checkpoint)]
            checks.append(Check(f"no {name}", not hits, f"called at step {hits[0] + 1}" if hits else "not called"))
            continue
        start = cursor if checkpoint.ordered else 0
        found = next((i for i in range(start, len(calls)) if _matches(calls[i], checkpoint)), None)
        if found is not None and checkpoint.ordered:
            cursor = found + 1
        detail = f"matched call {found + 1} of {len(calls)}" if found is not None else (
            "no matching call" + (" after the previous checkpoint" if checkpoint.ordered and start else ""))
        checks.append(Check(name, found is not None, detail))
    for key, want in sorted(expected_state.items()):
        raw = final_state.get(key)
        try:
            got = json.loads(raw) if raw is not None else None
        except json.JSONDecodeError:
            got = raw
        ok = raw is not None and got == want
        detail = "as expected" if ok else ("missing" if raw is None else f"expected {json.dumps(want)[:80]}, got {raw[:80]}")
        checks.append(Check(f"state {key}", ok, detail))
    return Verdict.from_checks(VERIFIER, checks)
