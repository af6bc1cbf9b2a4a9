"""Logic-puzzle checkers verify answers against the puzzle itself, table-driven."""

from __future__ import annotations

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verifiers.puzzles import cryptarithm, game24, morse, sudoku


@pytest.mark.parametrize(("numbers", "response", "passes"), [
    ([4, 7, 8, 8], "(7 - 8/8) * 4 = 24", True),
    ([3, 3, 8, 8], r"$\boxed{8 / (3 - 8/3)}$", True),  # needs exact fractions
    ([1, 2, 3, 4], "1 × 2 × 3 × 4 = 24", True),  # unicode operators
    ([4, 7, 8, 8], "4 * 6 = 24", False),  # numbers not the puzzle's
    ([4, 7, 8, 8], "(8 + 8) + 7 + 4 - 1 = 24", False),  # extra number
    ([4, 7, 8, 8], "8 * 8 / 4 + 7 = 23", False),  # wrong value (23)
    ([4, 7, 8, 8], "4 * 8 - 8 / 0 + 7", False),  # division by zero
    ([4, 7, 8, 8], "__import__('os').system('true')", False),  # code is not arithmetic
    ([4, 7, 8, 8], "I cannot find one.", False),
    ([2, 3, 4, 4], "The answer: (4 + 4) * (2 + 3 - 2)", False),  # 2 used twice
    ([1, 1, 1, 1], "((" * 30 + "1+1+1+1" + "))" * 30, False),  # nesting and length bounded
])
def test_game24(numbers: list[int], response: str, passes: bool) -> None:
    assert game24.verify(numbers, 24, response).passed is passes


def test_game24_rejects_bad_puzzles() -> None:
    with pytest.raises(InvalidArgument):
        game24.verify([0, 1, 2, 3], 24, "x")


PUZZLE = "530070000600195000098000060800060003400803001700020006060000280000419005000080079"
SOLUTION = "534678912672195348198342567859761423426853791713924856961537284287419635345286179"


def _grid(cells: str) -> str:
    rows = [cells[i:i + 9] for i in range(0, 81, 9)]
    return "\n".join(" ".join(r[:3]) + " | " + " ".join(r[3:6]) + " | " + " ".join(r[6:]) for r in rows)


def _swap_two_cells(cells: str, i: int, j: int) -> str:
    cells = list(cells)
    cells[i], cells[j] = cells[j], cells[i]
    return "".join(cells)


@pytest.mark.parametrize(("response", "passes"), [
    ("Solved:\n" + _grid(SOLUTION), True),
    (rf"\boxed{{{SOLUTION}}}", True),
    ("Puzzle:\n" + _grid(PUZZLE) + "\nSolution:\n" + _grid(SOLUTION), True),  # restated puzzle first
    (_grid(_swap_two_cells(SOLUTION, 2, 3)), False),  # 4 and 6 swapped in row 1: columns break
    (_grid(PUZZLE), False),  # unsolved
    ("no grid", False),
])
def test_sudoku(response: str, passes: bool) -> None:
    assert sudoku.verify(PUZZLE, response).passed is passes


def test_sudoku_valid_grid_that_changes_a_given_fails() -> None:
    # A valid sudoku (digits relabelled 1<->2) that no longer keeps the puzzle's givens.
    relabelled = SOLUTION.translate(str.maketrans("12", "21"))
    verdict = sudoku.verify(PUZZLE, _grid(relabelled))
    assert not verdict.passed
    assert {c.name: c.passed for c in verdict.checks} == {"givens_kept": False, "rules": True}


def test_sudoku_4x4_and_bad_puzzles() -> None:
    assert sudoku.verify("12..34.." + "........", "1234\n3412\n2143\n4321").passed
    assert not sudoku.verify("12..34.." + "........", "1234\n3412\n2143\n4312").passed  # columns 3, 4 repeat
    with pytest.raises(InvalidArgument):
        sudoku.verify("123", "x")


@pytest.mark.parametrize(("response", "passes"), [
    ("S=9, E=5, N=6, D=7, M=1, O=0, R=8, Y=2", True),
    ("So 9567 + 1085 = 10652.", True),
    ("S→9 E→5 N→6 D→7 M→1 O→0 R→8 Y→3", False),  # sum fails
    ("S=9, E=9, N=6, D=7, M=1, O=0, R=8, Y=2", False),  # two letters share 9
    ("9567 + 1085 = 10652 but E is 5 and 6", True),
    ("9566 + 1085 = 10651", False),  # D and N both 6 across the words
    ("S=9, E=5, N=6", False),  # incomplete
])
def test_cryptarithm(response: str, passes: bool) -> None:
    assert cryptarithm.verify("SEND + MORE = MONEY", response).passed is passes


def test_cryptarithm_leading_zero_fails() -> None:
    # 1 + 02 = 03: distinct digits and a true sum, but BC and BD start with 0.
    verdict = cryptarithm.verify("A + BC = BD", "A=1, B=0, C=2, D=3")
    assert {c.name: c.passed for c in verdict.checks} == {
        "distinct_digits": True, "no_leading_zero": False, "sum": True}
    with pytest.raises(InvalidArgument):
        cryptarithm.verify("SEND + MORE", "x")


@pytest.mark.parametrize(("puzzle", "decode", "response", "passes"), [
    (".... . .-.. .-.. --- / .-- --- .-. .-.. -..", True, "The answer is: hello world", True),
    (".... . .-.. .-.. ---   .-- --- .-. .-.. -..", True, r"\boxed{HELLO WORLD}", True),
    (".... . .-.. .-.. ---", True, "HELP", False),
    ("SOS", False, "... --- ...", True),
    ("SOS", False, "Answer: ··· ——— ···", True),  # typographic dots and dashes
    ("SOS", False, "... --- ..-", False),
])
def test_morse(puzzle: str, decode: bool, response: str, passes: bool) -> None:
    assert morse.verify(puzzle, decode, response).passed is passes


def test_morse_invalid_puzzle_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument):
        morse.verify("........", True, "x")
