"""24-game: combine the puzzle's numbers, each exactly once, with + - * / and parentheses
to reach the target. The expression is parsed by a small recursive-descent parser and
evaluated with exact fractions (8 / (3 - 8/3) = 24 exactly)."""

from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verdict import Check, Verdict
from k2rl.judge.verifiers.puzzles.answer import answer_region, boxed_contents

VERIFIER = "puzzle_game24/1"
MAX_EXPRESSION_CHARS = 200
_OPERATORS = {"×": "*", "·": "*", "x": "*", "X": "*", "÷": "/", "−": "-", "–": "-"}
_CANDIDATE = re.compile(r"[\d(][\d\s+\-*/×÷·xX−–()]*[\d)]")


class ExpressionError(ValueError):
    """The text is not an arithmetic expression of the allowed form."""


class _Parser:
    """expr := term (('+'|'-') term)* ; term := atom (('*'|'/') atom)* ; atom := INT | '(' expr ')'"""

    def __init__(self, text: str) -> None:
        self.tokens = re.findall(r"\d+|[+\-*/()]|\S", text)
        self.pos = 0
        self.numbers: list[int] = []

    def parse(self) -> Fraction:
        value = self._expr(depth=0)
        if self.pos != len(self.tokens):
            raise ExpressionError(f"unexpected {self.tokens[self.pos]!r}")
        return value

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _expr(self, depth: int) -> Fraction:
        value = self._term(depth)
        while self._peek() in ("+", "-"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self._term(depth)
            value = value + rhs if op == "+" else value - rhs
        return value

    def _term(self, depth: int) -> Fraction:
        value = self._atom(depth)
        while self._peek() in ("*", "/"):
            op = self.tokens[self.pos]
            self.pos += 1
            rhs = self._atom(depth)
            if op == "/" and rhs == 0:
                raise ExpressionError("division by zero")
            value = value * rhs if op == "*" else value / rhs
        return value

    def _atom(self, depth: int) -> Fraction:
        if depth > 20:
            raise ExpressionError("too deeply nested")
        token = self._peek()
        if token is None:
            raise ExpressionError("expression ends early")
        self.pos += 1
        if token == "(":
            value = self._expr(depth + 1)
            if self._peek() != ")":
                raise ExpressionError("unbalanced parentheses")
            self.pos += 1
            return value
        if token.isdigit() and token.isascii():
            self.numbers.append(int(token))
            return Fraction(int(token))
        raise ExpressionError(f"unexpected {token!r} (only numbers, + - * / and parentheses)")


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of ``expression`` and the numbers it uses, in order."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"expression longer than {MAX_EXPRESSION_CHARS} chars")
    for symbol, ascii_op in _OPERATORS.items():
        expression = expression.replace(symbol, ascii_op)
    parser = _Parser(expression)
    return parser.parse(), parser.numbers


def final_expression(response: str) -> str | None:
    """The answer expression: the longest arithmetic span of the last ``\\boxed{}``, else
    the last arithmetic span of the response. One expression only: trying every span would
    reward a response that sprays many attempts."""
    region = answer_region(response)
    boxed = boxed_contents(region)
    spans = [m.group(0).strip() for m in _CANDIDATE.finditer(boxed[-1] if boxed else region)]
    spans = [s for s in spans if re.search(r"[+\-*/×÷·xX−–]", s)]
    if not spans:
        return None
    return max(spans, key=len) if boxed else spans[-1]


def validate_puzzle(numbers: list[int], target: int) -> None:
    if not 2 <= len(numbers) <= 8 or any(n <= 0 for n in numbers):
        raise InvalidArgument("a 24-game puzzle needs 2 to 8 positive numbers", field="numbers")


def verify(numbers: list[int], target: int, response: str) -> Verdict:
    """Pass iff the answer expression uses exactly ``numbers`` and equals ``target``."""
    validate_puzzle(numbers, target)
    expression = final_expression(response)
    if expression is None:
        return Verdict.failed(VERIFIER, "solution", "no arithmetic expression found")
    try:
        value, used = evaluate(expression)
    except ExpressionError as error:
        return Verdict.failed(VERIFIER, "solution", f"{expression!r}: {error}")
    if Counter(used) != Counter(numbers):
        return Verdict.failed(
            VERIFIER, "numbers", f"{expression!r} uses {sorted(used)}; the puzzle's numbers are {sorted(numbers)}"
        )
    if value != target:
        return Verdict.failed(VERIFIER, "value", f"{expression!r} = {value}, not {target}")
    return Verdict.from_checks(VERIFIER, [Check("solution", True, f"{expression} = {target}")])
