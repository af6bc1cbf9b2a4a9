"""Sudoku (4x4 or 9x9): the answer grid must be a valid solution that keeps every given.

The puzzle is a string of n*n cells, row-major, digits for givens and ``0`` or ``.`` for
blanks. The answer grid is read from the response's last n rows of n digits (separators
such as spaces, ``|`` and ``+--`` lines are ignored), or from a ``\\boxed{}`` of n*n digits.
"""

from __future__ import annotations

import math
import re

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verdict import Check, Verdict
from k2rl.judge.verifiers.puzzles.answer import answer_region, boxed_contents

VERIFIER = "puzzle_sudoku/1"


def parse_puzzle(grid: str) -> list[int]:
    cells = [0 if c in "0." else int(c) for c in re.sub(r"\s", "", grid) if c.isdigit() or c == "."]
    size = math.isqrt(len(cells))
    if len(cells) not in (16, 81) or len(cells) != len(re.sub(r"\s", "", grid)):
        raise InvalidArgument("a sudoku grid is 16 or 81 cells of digits, '0' or '.' for blanks", field="grid")
    if any(c > size for c in cells):
        raise InvalidArgument(f"a {size}x{size} sudoku has digits 1..{size}", field="grid")
    return cells


def read_answer_grid(response: str, size: int) -> list[int] | None:
    region = answer_region(response)
    for box in reversed(boxed_contents(region)):
        digits = re.sub(r"\D", "", box)
        if len(digits) == size * size:
            return [int(d) for d in digits]
    rows = []
    for line in region.splitlines():
        digits = re.sub(r"[\s|,;+\-_.:]", "", line)
        if len(digits) == size and digits.isascii() and digits.isdigit():
            rows.append([int(d) for d in digits])
    if len(rows) < size:
        return None
    return [d for row in rows[-size:] for d in row]


def _units(size: int) -> list[tuple[str, list[int]]]:
    box = math.isqrt(size)
    units = [(f"row {r + 1}", [r * size + c for c in range(size)]) for r in range(size)]
    units += [(f"column {c + 1}", [r * size + c for r in range(size)]) for c in range(size)]
    for br in range(0, size, box):
        for bc in range(0, size, box):
            cells = [(br + r) * size + bc + c for r in range(box) for c in range(box)]
            units.append((f"box {br // box * box + bc // box + 1}", cells))
    return units


def verify(grid: str, response: str) -> Verdict:
    givens = parse_puzzle(grid)
    size = math.isqrt(len(givens))
    answer = read_answer_grid(response, size)
    if answer is None:
        return Verdict.failed(VERIFIER, "grid", f"no {size}x{size} grid of digits found in the response")
    changed = [i for i, g in enumerate(givens) if g and answer[i] != g]
    keeps = Check(
        "givens_kept", not changed,
        "all givens kept" if not changed else
        f"given at row {changed[0] // size + 1}, column {changed[0] % size + 1} changed "
        f"from {givens[changed[0]]} to {answer[changed[0]]}",
    )
    expected = set(range(1, size + 1))
    broken = [name for name, cells in _units(size) if {answer[i] for i in cells} != expected]
    valid = Check("rules", not broken, "every row, column and box holds 1..n once" if not broken
                  else f"{len(broken)} units break the rules, first {broken[0]}")
    verdict = Verdict.from_checks(VERIFIER, [keeps, valid])
    # Partial credit would reward near-misses of a puzzle that is either solved or not.
    verdict.reward = float(verdict.passed)
    return verdict
