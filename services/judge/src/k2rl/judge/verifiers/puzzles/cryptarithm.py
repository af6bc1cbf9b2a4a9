"""Cryptarithm (alphametic addition, e.g. ``SEND + MORE = MONEY``): each letter stands for
a distinct digit, no number has a leading zero, and the sum holds.

The answer is a letter -> digit assignment (``S=9, E=5, ...``) or the equation with digits
substituted (``9567 + 1085 = 10652``), from which the assignment is read back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verdict import Check, Verdict
from k2rl.judge.verifiers.puzzles.answer import answer_region

VERIFIER = "puzzle_cryptarithm/1"
_PAIR = re.compile(r"\b([A-Z])\s*(?:=|:|->|→)\s*(\d)\b")


@dataclass(frozen=True)
class Alphametic:
    addends: tuple[str, ...]
    total: str

    @property
    def words(self) -> tuple[str, ...]:
        return (*self.addends, self.total)

    @property
    def letters(self) -> set[str]:
        return set("".join(self.words))


def parse_puzzle(equation: str) -> Alphametic:
    compact = re.sub(r"\s", "", equation.upper())
    match = re.fullmatch(r"([A-Z]+(?:\+[A-Z]+)+)=([A-Z]+)", compact)
    if match is None:
        raise InvalidArgument("a cryptarithm is 'WORD + WORD [+ ...] = WORD' in letters A-Z", field="equation")
    puzzle = Alphametic(tuple(match.group(1).split("+")), match.group(2))
    if len(puzzle.letters) > 10:
        raise InvalidArgument("a cryptarithm has at most 10 distinct letters", field="equation")
    return puzzle


def _assignment_from_pairs(region: str, puzzle: Alphametic) -> dict[str, int] | None:
    pairs = _PAIR.findall(region.upper())
    if not pairs:
        return None
    mapping: dict[str, int] = {}
    for letter, digit in pairs:  # later pairs win: the final assignment follows attempts
        if letter in puzzle.letters:
            mapping[letter] = int(digit)
    return mapping if set(mapping) == puzzle.letters else None


def _assignment_from_equation(region: str, puzzle: Alphametic) -> tuple[dict[str, int] | None, str]:
    shape = r"\s*\+\s*".join(rf"(\d{{{len(w)}}})" for w in puzzle.addends) + rf"\s*=\s*(\d{{{len(puzzle.total)}}})"
    matches = list(re.finditer(rf"(?<!\d){shape}(?!\d)", region))
    if not matches:
        return None, "no assignment (L=d pairs) or digit equation of the puzzle's shape found"
    numbers = matches[-1].groups()
    mapping: dict[str, int] = {}
    for word, number in zip(puzzle.words, numbers, strict=True):
        for letter, digit in zip(word, number, strict=True):
            if mapping.setdefault(letter, int(digit)) != int(digit):
                return None, f"letter {letter} stands for both {mapping[letter]} and {digit}"
    return mapping, ""


def verify(equation: str, response: str) -> Verdict:
    puzzle = parse_puzzle(equation)
    region = answer_region(response)
    mapping = _assignment_from_pairs(region, puzzle)
    if mapping is None:
        mapping, problem = _assignment_from_equation(region, puzzle)
        if mapping is None:
            return Verdict.failed(VERIFIER, "assignment", problem)
    digits = list(mapping.values())
    distinct = Check("distinct_digits", len(set(digits)) == len(digits),
                     "letters map to distinct digits" if len(set(digits)) == len(digits)
                     else "two letters share a digit")
    leading = [w for w in puzzle.words if len(w) > 1 and mapping[w[0]] == 0]
    no_leading_zero = Check("no_leading_zero", not leading,
                            "no leading zeros" if not leading else f"{leading[0]} starts with 0")

    def value(word: str) -> int:
        return int("".join(str(mapping[letter]) for letter in word))

    left, right = sum(value(w) for w in puzzle.addends), value(puzzle.total)
    holds = Check("sum", left == right, f"{' + '.join(str(value(w)) for w in puzzle.addends)} = {left}, "
                  f"{puzzle.total} = {right}")
    verdict = Verdict.from_checks(VERIFIER, [distinct, no_leading_zero, holds])
    verdict.reward = float(verdict.passed)
    return verdict
