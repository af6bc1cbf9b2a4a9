"""Prompts for the critic: a pairwise comparison against rubrics, and a yes/no constraint
check. The critic is asked for one JSON object; ``parse.py`` copes when it does not comply."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from k2rl.judge.critic.rubrics import Rubric

# Responses and conversations are clipped so one huge response cannot blow the critic's
# context window; the clip is marked so the critic knows.
MAX_RESPONSE_CHARS = 12_000
MAX_CONTEXT_CHARS = 8_000

SYSTEM_PROMPT = (
    "You are a meticulous critic comparing two assistant responses to the same user prompt. "
    "Judge them against each rubric independently, then give an overall verdict. Ignore the order in "
    "which the responses are shown and their length except as the rubrics say. Reply with a single JSON "
    "object and nothing else."
)


@dataclass(frozen=True)
class Turn:
    role: str
    content: str


def clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[: limit // 2] + f"\n[... {len(text) - limit} characters omitted ...]\n" + text[-limit // 2:]


def _rubric_lines(rubrics: Sequence[Rubric]) -> str:
    lines = []
    for rubric in rubrics:
        tags = [rubric.kind.value] + (["MANDATORY: a response that violates it loses"] if rubric.mandatory else [])
        lines.append(f"- {rubric.name} ({', '.join(tags)}): {rubric.criterion}")
    return "\n".join(lines)


def comparison_messages(prompt: str, context: Sequence[Turn], response_a: str, response_b: str,
                        rubrics: Sequence[Rubric], reference: str = "") -> list[dict[str, str]]:
    """Chat messages asking the critic which of A and B is better under ``rubrics``."""
    parts = []
    if context:
        history = "\n".join(f"[{turn.role}] {turn.content}" for turn in context)
        parts.append(f"## Conversation so far\n{clip(history, MAX_CONTEXT_CHARS)}")
    parts.append(f"## User prompt\n{clip(prompt, MAX_CONTEXT_CHARS)}")
    if reference:
        parts.append(f"## Reference response (for guidance)\n{clip(reference, MAX_RESPONSE_CHARS)}")
    parts.append(f"## Response A\n{clip(response_a, MAX_RESPONSE_CHARS)}")
    parts.append(f"## Response B\n{clip(response_b, MAX_RESPONSE_CHARS)}")
    parts.append(f"## Rubrics\n{_rubric_lines(rubrics)}")
    names = ", ".join(r.name for r in rubrics)
    parts.append(
        "## Answer format\nReply with JSON only:\n"
        '{"rubrics": [{"name": "<rubric name>", "preference": "A" | "B" | "tie", '
        '"a_violates": true | false, "b_violates": true | false, "rationale": "<one sentence>"}, ...], '
        '"overall": "A" | "B" | "tie", "confidence": <0.5 to 1.0>, "rationale": "<two sentences at most>"}\n'
        f"Include one entry for each rubric: {names}."
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(parts)}]


def constraint_messages(prompt: str, response: str, constraint: str) -> list[dict[str, str]]:
    """Chat messages asking whether ``response`` satisfies a constraint only judgement can check."""
    user = (
        f"## User prompt\n{clip(prompt, MAX_CONTEXT_CHARS)}\n\n## Response\n{clip(response, MAX_RESPONSE_CHARS)}\n\n"
        f"## Constraint\n{constraint}\n\n"
        'Does the response satisfy the constraint? Reply with JSON only: {"satisfied": true | false, '
        '"rationale": "<one sentence>"}'
    )
    return [{"role": "system", "content": "You check whether a response satisfies one instruction. "
             "Claims the response makes about itself are not evidence."}, {"role": "user", "content": user}]
