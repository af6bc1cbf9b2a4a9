"""Instruction following: deterministic checks of verifiable constraints, IFEval-style.

Each constraint names a checker (IFEval ids, e.g. ``length_constraints:number_words``) and
its JSON arguments; a task composes several. Reward = fraction of constraints met; passed
only if all are. Constraints with no checker need judgement and go to the critic
(``engine.py``). Bad checker ids or arguments are the caller's error (INVALID_ARGUMENT).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from k2rl.core.errors import InvalidArgument
from k2rl.judge.text import strip_thinking
from k2rl.judge.verdict import Check

VERIFIER = "instruction_following/1"


@dataclass(frozen=True)
class Constraint:
    checker: str
    arguments: dict[str, Any]
    description: str = ""


def parse_constraint(checker: str, arguments_json: str, description: str = "") -> Constraint:
    """Validate the checker id and decode its arguments; raises InvalidArgument."""
    if checker and checker not in CHECKERS:
        known = ", ".join(sorted(CHECKERS))
        raise InvalidArgument(f"unknown checker {checker!r}; known: {known}", field="checker")
    try:
        arguments = json.loads(arguments_json) if arguments_json.strip() else {}
    except json.JSONDecodeError as error:
        raise InvalidArgument(f"not valid JSON: {error}", field="arguments_json") from None
    if not isinstance(arguments, dict):
        raise InvalidArgument("must be a JSON object", field="arguments_json")
    if not checker and not description:
        raise InvalidArgument("a constraint needs a checker or a description for the critic", field="description")
    return Constraint(checker, arguments, description)


class _Args:
    """Typed access to a checker's arguments; a missing or mistyped one is INVALID_ARGUMENT."""

    def __init__(self, checker: str, values: dict[str, Any]) -> None:
        self._checker, self._values = checker, values

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self._values.get(key, default)
        if value is None or isinstance(value, bool) or not isinstance(value, kind):
            raise InvalidArgument(
                f"{self._checker} needs {key!r} of type {getattr(kind, '__name__', kind)}, got {value!r}",
                field="arguments_json",
            )
        return value

    def int(self, key: str, default: int | None = None) -> int:
        value = self._get(key, int, default)
        if value < 0:
            raise InvalidArgument(f"{self._checker}: {key!r} must be >= 0", field="arguments_json")
        return value

    def str(self, key: str, default: str | None = None) -> str:
        return self._get(key, str, default)

    def words(self, key: str) -> list[str]:
        value = self._get(key, list)
        if not all(isinstance(v, str) and v for v in value):
            raise InvalidArgument(f"{self._checker}: {key!r} must be a list of strings", field="arguments_json")
        return value

    def relation(self) -> Callable[[int, int], bool]:
        name = self.str("relation", "at least")
        try:
            return RELATIONS[name]
        except KeyError:
            raise InvalidArgument(
                f"{self._checker}: relation {name!r} is not one of {sorted(RELATIONS)}", field="arguments_json"
            ) from None


RELATIONS: dict[str, Callable[[int, int], bool]] = {
    "less than": lambda n, k: n < k,
    "at most": lambda n, k: n <= k,
    "exactly": lambda n, k: n == k,
    "at least": lambda n, k: n >= k,
    "more than": lambda n, k: n > k,
}

_WORD = re.compile(r"\b\w+(?:[-']\w+)*\b", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[.!?。！？])$")
_PARAGRAPH_SPLIT = re.compile(r"\n\s*\n|^\s*\*\*\*\s*$", re.MULTILINE)


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


def count_sentences(text: str) -> int:
    return len([s for s in _SENTENCE_END.split(text.strip()) if s and s.strip()])


def paragraphs(text: str) -> list[str]:
    return [p for p in _PARAGRAPH_SPLIT.split(text.strip()) if p and p.strip()]


def _counted(name: str, count: int, relation: str, target: int, ok: bool) -> tuple[bool, str]:
    return ok, f"{count} {name}, required {relation} {target}"


def _number_words(text: str, a: _Args) -> tuple[bool, str]:
    n, k = count_words(text), a.int("num_words")
    return _counted("words", n, a.str("relation", "at least"), k, a.relation()(n, k))


def _number_sentences(text: str, a: _Args) -> tuple[bool, str]:
    n, k = count_sentences(text), a.int("num_sentences")
    return _counted("sentences", n, a.str("relation", "at least"), k, a.relation()(n, k))


def _number_paragraphs(text: str, a: _Args) -> tuple[bool, str]:
    n, k = len(paragraphs(text)), a.int("num_paragraphs")
    return _counted("paragraphs", n, "exactly", k, n == k)


def _keywords_exist(text: str, a: _Args) -> tuple[bool, str]:
    lowered = text.casefold()
    missing = [w for w in a.words("keywords") if w.casefold() not in lowered]
    return not missing, f"missing keywords: {missing}" if missing else "all keywords present"


def _forbidden_words(text: str, a: _Args) -> tuple[bool, str]:
    found = [w for w in a.words("forbidden_words")
             if re.search(rf"\b{re.escape(w)}\b", text, re.IGNORECASE | re.UNICODE)]
    return not found, f"forbidden words used: {found}" if found else "no forbidden word used"


def _keyword_frequency(text: str, a: _Args) -> tuple[bool, str]:
    keyword, k = a.str("keyword"), a.int("frequency")
    n = len(re.findall(rf"\b{re.escape(keyword)}\b", text, re.IGNORECASE | re.UNICODE))
    return _counted(f"occurrences of {keyword!r}", n, a.str("relation", "at least"), k, a.relation()(n, k))


def _json_format(text: str, a: _Args) -> tuple[bool, str]:
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, re.DOTALL | re.IGNORECASE)
    try:
        json.loads(fenced.group(1) if fenced else body)
    except json.JSONDecodeError as error:
        return False, f"not valid JSON: {error.msg} at char {error.pos}"
    return True, "valid JSON"


def _bullet_lists(text: str, a: _Args) -> tuple[bool, str]:
    n, k = len(re.findall(r"^\s*[*\-•]\s+\S", text, re.MULTILINE)), a.int("num_bullets")
    return _counted("bullet points", n, "exactly", k, n == k)


def _highlighted_sections(text: str, a: _Args) -> tuple[bool, str]:
    n = len([h for h in re.findall(r"\*([^\n*]+)\*", text) if h.strip()])
    k = a.int("num_highlights")
    return _counted("highlighted sections", n, "at least", k, n >= k)


def _multiple_sections(text: str, a: _Args) -> tuple[bool, str]:
    splitter, k = a.str("section_spliter", "Section"), a.int("num_sections")
    n = len(re.findall(rf"^\s*{re.escape(splitter)}\s*\d+", text, re.MULTILINE))
    return _counted(f"'{splitter} N' sections", n, "at least", k, n >= k)


def _title(text: str, a: _Args) -> tuple[bool, str]:
    ok = re.search(r"<<[^\n<>]+>>", text) is not None
    return ok, "title in <<double angle brackets>> " + ("found" if ok else "missing")


def _lowercase(text: str, a: _Args) -> tuple[bool, str]:
    ok = text == text.lower()
    return ok, "all lowercase" if ok else "contains capital letters"


def _uppercase(text: str, a: _Args) -> tuple[bool, str]:
    ok = text == text.upper()
    return ok, "all capitals" if ok else "contains lowercase letters"


def _no_comma(text: str, a: _Args) -> tuple[bool, str]:
    n = text.count(",") + text.count("，")
    return n == 0, f"{n} commas"


def _end_checker(text: str, a: _Args) -> tuple[bool, str]:
    phrase = a.str("end_phrase")
    ok = text.strip().casefold().endswith(phrase.strip().casefold())
    return ok, f"ends with {phrase!r}" if ok else f"does not end with {phrase!r}"


def _start_checker(text: str, a: _Args) -> tuple[bool, str]:
    phrase = a.str("start_phrase")
    ok = text.strip().casefold().startswith(phrase.strip().casefold())
    return ok, f"starts with {phrase!r}" if ok else f"does not start with {phrase!r}"


def _quotation(text: str, a: _Args) -> tuple[bool, str]:
    body = text.strip()
    ok = len(body) >= 2 and body[0] == body[-1] == '"'
    return ok, "wrapped in double quotes" if ok else "not wrapped in double quotes"


def _postscript(text: str, a: _Args) -> tuple[bool, str]:
    marker = a.str("postscript_marker", "P.S.")
    ok = re.search(rf"^\s*{re.escape(marker)}", text, re.MULTILINE | re.IGNORECASE) is not None
    return ok, f"postscript {marker!r} " + ("found" if ok else "missing")


def _placeholders(text: str, a: _Args) -> tuple[bool, str]:
    n, k = len(re.findall(r"\[[^\[\]\n]+\]", text)), a.int("num_placeholders")
    return _counted("[placeholders]", n, "at least", k, n >= k)


# Languages told apart by script. Latin-script languages other than English cannot be
# distinguished by a deterministic check and are rejected (use the critic for those).
_SCRIPTS: dict[str, tuple[str, ...]] = {
    "en": ("LATIN",), "ru": ("CYRILLIC",), "uk": ("CYRILLIC",), "bg": ("CYRILLIC",),
    "zh": ("CJK",), "ja": ("HIRAGANA", "KATAKANA", "CJK"), "ko": ("HANGUL",), "ar": ("ARABIC",),
    "fa": ("ARABIC",), "hi": ("DEVANAGARI",), "el": ("GREEK",), "he": ("HEBREW",), "th": ("THAI",),
}


def _script_of(char: str) -> str:
    name = unicodedata.name(char, "")
    return name.split(" ")[0] if name else ""


def _response_language(text: str, a: _Args) -> tuple[bool, str]:
    language = a.str("language")
    if language not in _SCRIPTS:
        raise InvalidArgument(
            f"language {language!r} cannot be checked deterministically; supported: {sorted(_SCRIPTS)}",
            field="arguments_json",
        )
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return False, "no letters"
    wanted = _SCRIPTS[language]
    share = sum(_script_of(c) in wanted for c in letters) / len(letters)
    if language == "ja":  # kanji alone would be Chinese
        share = share if any(_script_of(c) in ("HIRAGANA", "KATAKANA") for c in letters) else 0.0
    return share >= 0.8, f"{share:.0%} of letters in the {'/'.join(wanted)} script"


CHECKERS: dict[str, Callable[[str, _Args], tuple[bool, str]]] = {
    "length_constraints:number_words": _number_words,
    "length_constraints:number_sentences": _number_sentences,
    "length_constraints:number_paragraphs": _number_paragraphs,
    "keywords:existence": _keywords_exist,
    "keywords:forbidden_words": _forbidden_words,
    "keywords:frequency": _keyword_frequency,
    "detectable_format:json_format": _json_format,
    "detectable_format:number_bullet_lists": _bullet_lists,
    "detectable_format:number_highlighted_sections": _highlighted_sections,
    "detectable_format:multiple_sections": _multiple_sections,
    "detectable_format:title": _title,
    "change_case:english_lowercase": _lowercase,
    "change_case:english_capital": _uppercase,
    "punctuation:no_comma": _no_comma,
    "startend:end_checker": _end_checker,
    "startend:start_checker": _start_checker,
    "startend:quotation": _quotation,
    "detectable_content:postscript": _postscript,
    "detectable_content:number_placeholders": _placeholders,
    "language:response_language": _response_language,
}


def check_constraint(constraint: Constraint, response: str) -> Check:
    """Run one deterministic constraint (``constraint.checker`` must be set)."""
    text = strip_thinking(response)
    passed, detail = CHECKERS[constraint.checker](text, _Args(constraint.checker, constraint.arguments))
    return Check(constraint.checker, passed, detail)
