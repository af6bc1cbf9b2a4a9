"""Where a puzzle answer sits in a response: the last ``\\boxed{}``, else "answer: ...",
else the last non-empty line."""

from __future__ import annotations

from k2rl.judge.text import (
    MAX_ANSWER_REGION_CHARS,
    boxed_contents,
    extract_final_answer,
    strip_thinking,
)


def answer_region(response: str) -> str:
    """The tail of the response (after any <think> block) that answers are searched in."""
    return strip_thinking(response)[-MAX_ANSWER_REGION_CHARS:]


def final_answer_text(response: str) -> str | None:
    region = answer_region(response)
    boxed = boxed_contents(region)
    if boxed:
        return boxed[-1].strip()
    answer, how = extract_final_answer(region)
    if answer is not None and how == "answer_is":
        return answer
    lines = [line.strip() for line in region.splitlines() if line.strip()]
    return lines[-1] if lines else None
