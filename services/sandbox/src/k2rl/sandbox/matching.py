"""Comparison of a program's stdout with a test case's expected output."""

from __future__ import annotations

import math

from k2rl.sandbox.model import OutputMatch


def _lines(data: bytes) -> list[bytes]:
    lines = [line.rstrip() for line in data.split(b"\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _tokens_equal(expected: bytes, actual: bytes, tolerance: float) -> bool:
    if expected == actual:
        return True
    if tolerance <= 0:
        return False
    try:
        want, got = float(expected), float(actual)
    except ValueError:
        return False
    if math.isnan(want) or math.isnan(got):
        return False
    return abs(want - got) <= tolerance or abs(want - got) <= tolerance * abs(want)


def _short(data: bytes, limit: int = 40) -> str:
    text = data.decode(errors="replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def compare(expected: bytes, actual: bytes, match: OutputMatch, tolerance: float = 0.0) -> str:
    """Empty if ``actual`` matches, else a short explanation of the first difference."""
    if match is OutputMatch.EXACT:
        if expected == actual:
            return ""
        at = next((i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
                  min(len(expected), len(actual)))
        return f"byte {at}: expected {_short(expected[at:])}, got {_short(actual[at:])}"
    if match is OutputMatch.TOKENS:
        want, got = expected.split(), actual.split()
        for index, (a, b) in enumerate(zip(want, got, strict=False)):
            if not _tokens_equal(a, b, tolerance):
                return f"token {index + 1}: expected {_short(a)}, got {_short(b)}"
        if len(want) != len(got):
            return f"expected {len(want)} tokens, got {len(got)}"
        return ""
    want_lines, got_lines = _lines(expected), _lines(actual)
    for index, (a, b) in enumerate(zip(want_lines, got_lines, strict=False)):
        if a != b:
            return f"line {index + 1}: expected {_short(a)}, got {_short(b)}"
    if len(want_lines) != len(got_lines):
        return f"expected {len(want_lines)} lines, got {len(got_lines)}"
    return ""
