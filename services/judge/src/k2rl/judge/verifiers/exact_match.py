"""Exact match: the final answer equals one of the accepted answers (multiple choice,
short answers). Case-insensitive and whitespace/width-normalised unless case-sensitive."""

from __future__ import annotations

from k2rl.core.errors import InvalidArgument
from k2rl.judge.text import normalise
from k2rl.judge.verdict import Check, Verdict
from k2rl.judge.verifiers.puzzles.answer import final_answer_text

VERIFIER = "exact_match/1"


def _canonical(text: str, case_sensitive: bool) -> str:
    text = normalise(text).strip(" .\"'`*")
    if text.startswith("(") and text.endswith(")") and len(text) <= 4:  # "(B)" -> "B"
        text = text[1:-1]
    return text if case_sensitive else text.casefold()


def verify(accepted: list[str], case_sensitive: bool, response: str) -> Verdict:
    if not accepted or not any(a.strip() for a in accepted):
        raise InvalidArgument("at least one non-empty accepted answer is needed", field="accepted_answers")
    answer = final_answer_text(response)
    if answer is None:
        return Verdict.failed(VERIFIER, "answer", "empty response")
    got = _canonical(answer, case_sensitive)
    ok = got in {_canonical(a, case_sensitive) for a in accepted}
    detail = f"answer {answer[:120]!r} " + ("accepted" if ok else f"not among {len(accepted)} accepted answers")
    return Verdict.from_checks(VERIFIER, [Check("answer", ok, detail)])
