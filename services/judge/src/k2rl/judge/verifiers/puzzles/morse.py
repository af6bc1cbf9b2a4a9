"""Morse code, both directions, checked by encoding/decoding the puzzle itself.

Decode puzzles give Morse (letters separated by spaces, words by `` / `` or 3+ spaces) and
expect the plaintext; encode puzzles give plaintext and expect Morse. Comparison is
case-insensitive and whitespace-normalised.
"""

from __future__ import annotations

import re

from k2rl.core.errors import InvalidArgument
from k2rl.judge.text import normalise
from k2rl.judge.verdict import Check, Verdict
from k2rl.judge.verifiers.puzzles.answer import final_answer_text

VERIFIER = "puzzle_morse/1"

CODE: dict[str, str] = {
    "A": ".-", "B": "-...", "C": "-.-.", "D": "-..", "E": ".", "F": "..-.", "G": "--.", "H": "....",
    "I": "..", "J": ".---", "K": "-.-", "L": ".-..", "M": "--", "N": "-.", "O": "---", "P": ".--.",
    "Q": "--.-", "R": ".-.", "S": "...", "T": "-", "U": "..-", "V": "...-", "W": ".--", "X": "-..-",
    "Y": "-.--", "Z": "--..", "0": "-----", "1": ".----", "2": "..---", "3": "...--", "4": "....-",
    "5": ".....", "6": "-....", "7": "--...", "8": "---..", "9": "----.", ".": ".-.-.-", ",": "--..--",
    "?": "..--..", "'": ".----.", "!": "-.-.--", "/": "-..-.", "(": "-.--.", ")": "-.--.-", "&": ".-...",
    ":": "---...", ";": "-.-.-.", "=": "-...-", "+": ".-.-.", "-": "-....-", "\"": ".-..-.", "@": ".--.-.",
}
_LETTER = {code: letter for letter, code in CODE.items()}
_DASHES = str.maketrans({"—": "-", "–": "-", "−": "-", "_": "-", "·": ".", "•": "."})


def _morse_words(morse: str) -> list[list[str]]:
    morse = morse.translate(_DASHES).strip()
    words = re.split(r"\s*/\s*|\s{3,}|\s*\|\s*", morse)
    return [w.split() for w in words if w.strip()]


def decode(morse: str) -> str:
    words = []
    for word in _morse_words(morse):
        try:
            words.append("".join(_LETTER[code] for code in word))
        except KeyError as error:
            raise ValueError(f"{error.args[0]!r} is not a Morse letter") from None
    return " ".join(words)


def encode(text: str) -> str:
    words = []
    for word in normalise(text).upper().split(" "):
        try:
            words.append(" ".join(CODE[c] for c in word))
        except KeyError as error:
            raise ValueError(f"{error.args[0]!r} has no Morse code") from None
    return " / ".join(words)


def _canonical_morse(morse: str) -> str:
    return " / ".join(" ".join(word) for word in _morse_words(morse))


def verify(puzzle: str, decode_puzzle: bool, response: str) -> Verdict:
    """``decode_puzzle``: the puzzle is Morse and the answer plaintext; else the reverse."""
    try:
        expected = decode(puzzle) if decode_puzzle else encode(puzzle)
    except ValueError as error:
        raise InvalidArgument(f"puzzle is not valid: {error}", field="text") from None
    answer = final_answer_text(response)
    if answer is None:
        return Verdict.failed(VERIFIER, "answer", "empty response")
    if decode_puzzle:
        got = normalise(answer).upper().strip("\"'")
        ok = got == normalise(expected)
    else:
        got = _canonical_morse(answer)
        ok = got == expected
    detail = f"expected {expected[:120]!r}, got {got[:120]!r}"
    return Verdict.from_checks(VERIFIER, [Check("answer", ok, "matches" if ok else detail)])
