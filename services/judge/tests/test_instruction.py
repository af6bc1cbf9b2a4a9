"""Instruction-following checkers, table-driven: each row is (checker, arguments, response, passes)."""

from __future__ import annotations

import json

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.judge.verifiers.instruction import CHECKERS, check_constraint, parse_constraint

ROWS = [
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5}, "one two three four", True),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 4}, "one two three four", False),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 3}, "naïve café, straße", True),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 3}, "don't well-known", False),
    ("length_constraints:number_sentences", {"relation": "exactly", "num_sentences": 3}, "A. B! C?", True),
    ("length_constraints:number_sentences", {"relation": "at most", "num_sentences": 1}, "Hi. There.", False),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "p1 line\nstill p1\n\np2", True),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2}, "p1\n***\np2\n***\np3", False),
    ("keywords:existence", {"keywords": ["Paris", "Seine"]}, "paris lies on the seine", True),
    ("keywords:existence", {"keywords": ["Paris", "Seine"]}, "Paris is big", False),
    ("keywords:forbidden_words", {"forbidden_words": ["very"]}, "everything is fine", True),  # substring only
    ("keywords:forbidden_words", {"forbidden_words": ["very"]}, "It is VERY fine", False),
    ("keywords:frequency", {"keyword": "cat", "frequency": 2, "relation": "at least"}, "cat, Cat, cats", True),
    ("keywords:frequency", {"keyword": "cat", "frequency": 3, "relation": "at least"}, "cat, Cat, cats", False),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', True),
    ("detectable_format:json_format", {}, '{"a": 1,}', False),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two\ntext", True),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two\n* three", False),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and *b*", True),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2}, "*a* and b", False),
    ("detectable_format:multiple_sections", {"section_spliter": "Section", "num_sections": 2},
     "Section 1\nx\nSection 2\ny", True),
    ("detectable_format:title", {}, "<<My Title>>\nbody", True),
    ("detectable_format:title", {}, "My Title\nbody", False),
    ("change_case:english_lowercase", {}, "all lower, ünïcode too", True),
    ("change_case:english_lowercase", {}, "not All lower", False),
    ("change_case:english_capital", {}, "SHOUTING ÜBER", True),
    ("punctuation:no_comma", {}, "no commas here", True),
    ("punctuation:no_comma", {}, "full-width，comma", False),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. Any other questions? ", True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Any other questions? Done.", False),
    ("startend:start_checker", {"start_phrase": "Dear"}, "dear sir", True),
    ("startend:quotation", {}, '"wrapped"', True),
    ("startend:quotation", {}, '"half', False),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "body\nP.S. bye", True),
    ("detectable_content:number_placeholders", {"num_placeholders": 2}, "[name] at [address]", True),
    ("language:response_language", {"language": "ru"}, "Привет, как дела?", True),
    ("language:response_language", {"language": "ru"}, "Hello, how are you?", False),
    ("language:response_language", {"language": "ja"}, "こんにちは世界", True),
    ("language:response_language", {"language": "ja"}, "你好世界", False),  # kanji alone is not Japanese
]


@pytest.mark.parametrize(("checker", "arguments", "response", "passes"), ROWS)
def test_checker(checker: str, arguments: dict, response: str, passes: bool) -> None:
    check = check_constraint(parse_constraint(checker, json.dumps(arguments)), response)
    assert check.passed is passes, check.detail


def test_every_checker_has_a_row() -> None:
    assert {row[0] for row in ROWS} == set(CHECKERS)


def test_thinking_is_not_counted() -> None:
    constraint = parse_constraint("length_constraints:number_words", '{"relation": "less than", "num_words": 3}')
    assert check_constraint(constraint, "<think>" + "word " * 500 + "</think>two words").passed


def test_huge_response_is_checked_in_linear_time() -> None:
    constraint = parse_constraint("length_constraints:number_words", '{"relation": "at least", "num_words": 1000000}')
    assert check_constraint(constraint, "word-" * 1_000_000 + "end").passed is False  # one hyphenated word


@pytest.mark.parametrize(("checker", "arguments_json", "field"), [
    ("no_such:checker", "{}", "checker"),
    ("length_constraints:number_words", "{not json", "arguments_json"),
    ("length_constraints:number_words", "[1, 2]", "arguments_json"),
    ("", "{}", "description"),
])
def test_malformed_constraints_are_invalid_argument(checker: str, arguments_json: str, field: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        parse_constraint(checker, arguments_json)
    assert error.value.field == field


@pytest.mark.parametrize("arguments", [
    {"relation": "less than"}, {"relation": "about", "num_words": 3}, {"num_words": "3"}, {"num_words": -1},
    {"num_words": True},
])
def test_bad_arguments_fail_when_checked(arguments: dict) -> None:
    constraint = parse_constraint("length_constraints:number_words", json.dumps(arguments))
    with pytest.raises(InvalidArgument):
        check_constraint(constraint, "text")


def test_unsupported_language_is_rejected_not_guessed() -> None:
    constraint = parse_constraint("language:response_language", '{"language": "de"}')
    with pytest.raises(InvalidArgument, match="deterministically"):
        check_constraint(constraint, "Guten Tag")
