"""Text helpers shared by verifiers: bounded inputs and final-answer extraction."""

from __future__ import annotations

import re
import unicodedata

# Verifiers look at the tail of a response: a final answer is at the end, and a response
# of megabytes must not make regexes or parsers slow.
MAX_ANSWER_REGION_CHARS = 4096


def normalise(text: str) -> str:
    """NFKC, collapse whitespace, strip: full-width digits and odd spaces compare equal."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def strip_thinking(response: str) -> str:
    """Drop a leading <think>...</think> block (reasoning models): answers come after it."""
    end = response.rfind("</think>")
    return response[end + len("</think>"):] if end >= 0 else response


def boxed_contents(text: str) -> list[str]:
    r"""Contents of every ``\boxed{...}`` / ``\fbox{...}``, braces balanced, in order."""
    results = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for i in range(start, len(text)):
            char = text[i]
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    results.append(text[start:i])
                    break
    return results


_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|:|=)\s*[:\s]*(?P<answer>[^\n]+)", re.IGNORECASE
)
_LAST_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*(?:\s*/\s*\d+)?")


def extract_final_answer(response: str) -> tuple[str | None, str]:
    r"""The response's final answer and how it was found: ``\boxed``, "answer is", last number.

    Returns ``(None, reason)`` when no answer can be found.
    """
    text = strip_thinking(response)[-MAX_ANSWER_REGION_CHARS:]
    boxed = boxed_contents(text)
    if boxed:
        return boxed[-1].strip(), "boxed"
    matches = list(_ANSWER_IS.finditer(text))
    if matches:
        answer = matches[-1].group("answer").strip(" *$`:").rstrip(".").strip(" *$`:")
        if answer:
            return answer, "answer_is"
    numbers = _LAST_NUMBER.findall(text)
    if numbers:
        return numbers[-1].replace(" ", ""), "last_number"
    return None, "no final answer found (no \\boxed{}, 'answer is' or number)"
