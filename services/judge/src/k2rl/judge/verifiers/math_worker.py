"""Runs inside a ``KillingProcessPool`` worker: the only place sympy / math-verify run.

Library timeouts are disabled (``parsing_timeout=None``, ``timeout_seconds=None``): they
rely on ``signal.alarm``; the pool enforces the timeout by killing this process instead.
math-verify parses LaTeX with its own grammar into sympy objects; nothing is ``eval``-ed.
"""

from __future__ import annotations

import logging
import math

from math_verify import parse, verify

# math-verify warns on every call that its timeouts are off; they are off on purpose.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def _parse(text: str) -> list[object]:
    # Wrapping in \boxed{} makes math-verify take exactly this text as the answer rather
    # than searching it for one.
    return parse(f"\\boxed{{{text}}}", fallback_mode="no_fallback", parsing_timeout=None)  # type: ignore[arg-type]


def _as_float(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


EQUIVALENT, DIFFERENT, BAD_REFERENCE = "equivalent", "different", "bad_reference"


def check_equivalence(reference: str, answer: str, relative_tolerance: float) -> tuple[str, str]:
    """``(outcome, detail)``: outcome is EQUIVALENT, DIFFERENT or BAD_REFERENCE."""
    gold = _parse(reference)
    if not gold:
        return BAD_REFERENCE, f"reference answer {reference!r} does not parse as math"
    target = _parse(answer)
    if not target:
        return DIFFERENT, "answer does not parse as math"
    described = f"parsed {str(target[0])[:120]} vs reference {str(gold[0])[:120]}"
    if verify(gold, target, timeout_seconds=None):  # type: ignore[arg-type]
        return EQUIVALENT, described
    if relative_tolerance > 0:
        want, got = _as_float(gold[0]), _as_float(target[0])
        if want is not None and got is not None and math.isclose(got, want, rel_tol=relative_tolerance):
            return EQUIVALENT, f"{described} (within relative tolerance {relative_tolerance:g})"
    return DIFFERENT, described
