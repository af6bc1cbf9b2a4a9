"""Parsing critic replies, robust to garbage.

Critics, small ones above all, wrap JSON in prose or code fences, use single quotes, say
"Response A" instead of "A", or reply with no JSON at all. The parser takes the last JSON
object that decodes; failing that, it looks for an explicit overall verdict in the text
("[[A]]", "overall: B", "Response A is better"). Anything else is ``None``: the caller
counts it as no information, never as a preference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from k2rl.judge.critic.rubrics import Rubric

MAX_REPLY_CHARS = 50_000


@dataclass(frozen=True)
class RubricJudgement:
    name: str
    preference: str  # "A" | "B" | "tie"
    a_violates: bool = False
    b_violates: bool = False
    rationale: str = ""


@dataclass(frozen=True)
class CriticVerdict:
    """What the critic said about A vs B, in the order it saw them."""

    overall: str  # "A" | "B" | "tie"
    confidence: float = 1.0  # in [0.5, 1]
    rationale: str = ""
    rubrics: dict[str, RubricJudgement] = field(default_factory=dict)


def _preference(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip().strip("[]()*\"'.").lower()
    text = re.sub(r"^(?:response|answer|assistant)\s+", "", text)
    if text in ("a", "1", "first"):
        return "A"
    if text in ("b", "2", "second"):
        return "B"
    if text in ("tie", "draw", "equal", "neither", "both", "none", "c"):
        return "tie"
    return None


def _truthy(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("true", "yes", "1")


def _json_objects(text: str) -> list[dict[str, Any]]:
    """Every top-level ``{...}`` of ``text`` that decodes (strict JSON, then single quotes)."""
    found = []
    depth, start, in_string, escaped = 0, -1, "", False
    for i, char in enumerate(text):
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == in_string:
                in_string = ""
            continue
        if char == '"' and depth > 0:
            in_string = char
        elif char == "{":
            if depth == 0:
                start = i
            depth += 1
        elif char == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                candidate = text[start:i + 1]
                for attempt in (candidate, candidate.replace("'", '"')):
                    try:
                        value = json.loads(attempt)
                    except json.JSONDecodeError:
                        continue
                    if isinstance(value, dict):
                        found.append(value)
                    break
    return found


_TEXT_VERDICT = (
    re.compile(r"\[\[\s*(A|B|tie|C)\s*\]\]", re.IGNORECASE),
    re.compile(r"overall\W{0,5}(?:verdict|winner|preference)?\W{0,5}(?:response\s+)?(A|B|tie)\b", re.IGNORECASE),
    re.compile(r"\bresponse\s+(A|B)\s+is\s+(?:better|superior|preferred|stronger)", re.IGNORECASE),
)


def _confidence(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 1.0
    if number != number:  # NaN
        return 1.0
    return min(1.0, max(0.5, number / 100 if number > 1 else number))


def parse_comparison(reply: str, rubrics: list[Rubric]) -> CriticVerdict | None:
    """The critic's verdict, or None if the reply holds none."""
    text = reply[-MAX_REPLY_CHARS:]
    known = {r.name for r in rubrics}
    for obj in reversed(_json_objects(text)):
        overall = _preference(obj.get("overall") or obj.get("winner") or obj.get("preference"))
        if overall is None:
            continue
        judgements = {}
        entries = obj.get("rubrics")
        for entry in entries if isinstance(entries, list) else []:
            if not isinstance(entry, dict) or entry.get("name") not in known:
                continue
            judgements[entry["name"]] = RubricJudgement(
                entry["name"], _preference(entry.get("preference")) or "tie",
                _truthy(entry.get("a_violates")), _truthy(entry.get("b_violates")),
                str(entry.get("rationale", ""))[:500],
            )
        return CriticVerdict(overall, _confidence(obj.get("confidence")), str(obj.get("rationale", ""))[:1000],
                             judgements)
    for pattern in _TEXT_VERDICT:
        matches = pattern.findall(text)
        if matches:
            overall = _preference(matches[-1])
            if overall is not None:
                return CriticVerdict(overall, 1.0, "verdict read from free text")
    return None


def parse_constraint(reply: str) -> tuple[bool, str] | None:
    """``(satisfied, rationale)`` of a yes/no constraint reply, or None."""
    text = reply[-MAX_REPLY_CHARS:]
    for obj in reversed(_json_objects(text)):
        if "satisfied" in obj:
            return _truthy(obj["satisfied"]), str(obj.get("rationale", ""))[:500]
    match = re.search(r"\b(yes|no)\b", text.strip()[:20], re.IGNORECASE)
    if match:
        return match.group(1).lower() == "yes", "verdict read from free text"
    return None
