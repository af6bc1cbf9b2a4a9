"""Kimi K2's tiktoken format: K2's pre-tokenisation pattern under tiktoken, a locally
trained ``tiktoken.model``, special and tool-call tokens, chat template, ``load_tokenizer``."""

from __future__ import annotations

import json
import random

import pytest

from k2rl.models.chat import K2_CHAT_TOKENS, parse_tool_calls
from k2rl.models.testing import write_kimi_tokenizer_dir
from k2rl.models.tiktoken_bpe import (
    KIMI_PAT_STR,
    MAX_RUN_CHARS,
    encode_chunks,
    read_bpe_ranks,
    without_class_intersections,
)
from k2rl.models.tokenizer import ByteTokenizer, TiktokenTokenizer, load_tokenizer

tiktoken = pytest.importorskip("tiktoken")
regex = pytest.importorskip("regex")

CORPUS = [
    "Hello, World! I'm here; they'll see. DON'T SHOUT, we've HE'D it's",
    "The weather in Beijing is sunny: 北京今天天气晴朗，气温25度。",
    "Mixed中文text和English混合abc中def",
    "カタカナとひらがな、漢字。한국어 텍스트입니다. Привет, МИР! Ελληνικά ΚΕΦΑΛΑΙΑ",
    "digits 1234567890 and 3.14159, 1,000,000 ٣٤٥ ١٢",
    "combining: e\u0301 n\u0303 A\u030a; titlecase ǅemo ǈj; modifiers ʰa ʷe ˈstress",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ　全角 ＭＩＸｅｄ",
    "code:\n\tdef f(x):\n\t\treturn x**2  # square\n\n\n   \r\n  trailing   \n",
    "emoji 🙂🚀 symbols &&[^x] <|not_special|> ¿¡ «quotes» —dash— ™",
    "عربي مع أرقام ١٢٣ and עברית",
    "ALLCAPSword camelCaseWord PascalCase snake_case kebab-case",
    "  leading spaces\n\n\nblank lines\t\ttabs    ",
]

# Characters from every class the pattern distinguishes, for random strings.
_POOL = (
    list("aZqQ'sStTdDmMlLvVrReE") + list("北京天气漢字汉") + list("カなア한국") + list("ǅǈʰʷ")
    + ["\u0301", "\u0303", "\u093f"] + list("0123456789٣١") + list(" \t\n\r\u3000\u00a0")
    + list(".,;:!?-_()[]{}&^\"'") + ["🙂", "™", "€"] + list("ДЖжΩω")
)


def _random_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(_POOL) for _ in range(rng.randint(1, 40))) for _ in range(count)]


def _reference_pieces(text: str) -> list[str]:
    """K2's pattern as the ``regex`` package reads it in V1 mode (``&&`` = intersection)."""
    return regex.findall(KIMI_PAT_STR, text, flags=regex.V1)


def _tiktoken_pieces(pat_str: str, text: str, candidates: list[str]) -> list[bytes]:
    """How tiktoken splits ``text``: with every candidate piece in the vocabulary, tiktoken
    emits a piece as one token exactly when its own split produced that piece."""
    vocab = {bytes([b]) for b in range(256)} | {p.encode("utf-8") for p in candidates}
    ranks = {token: rank for rank, token in enumerate(sorted(vocab, key=lambda b: (len(b), b)))}
    encoding = tiktoken.Encoding("split-probe", pat_str=pat_str, mergeable_ranks=ranks, special_tokens={})
    return [encoding.decode_single_token_bytes(t) for t in encoding.encode_ordinary(text)]


@pytest.mark.parametrize("pattern", ["original", "without_intersections"])
def test_tiktoken_splits_like_the_reference_pattern(pattern):
    pat_str = KIMI_PAT_STR if pattern == "original" else without_class_intersections(KIMI_PAT_STR)
    for text in CORPUS + _random_texts(300):
        expected = _reference_pieces(text)
        assert _tiktoken_pieces(pat_str, text, expected) == [p.encode("utf-8") for p in expected], repr(text)


def test_rewritten_pattern_needs_no_set_operations():
    portable = without_class_intersections(KIMI_PAT_STR)
    assert "&&" not in portable and portable.count("(?![\\p{Han}])") == 4
    for text in CORPUS + _random_texts(300, seed=1):
        # V0: no set operations; lookahead and \p{..} only.
        assert regex.findall(portable, text, flags=regex.V0) == _reference_pieces(text), repr(text)
    # Why the rewrite exists: without set operations the original reads '&&[^' as literals.
    assert regex.findall(KIMI_PAT_STR, "abc中文", flags=regex.V0) != _reference_pieces("abc中文")
    with pytest.raises(ValueError, match="A&&"):
        without_class_intersections(r"[\p{L}&&\p{Lu}]")


@pytest.fixture(scope="module")
def kimi_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("kimi-tokenizer")
    write_kimi_tokenizer_dir(path, CORPUS * 3, num_merges=300)
    return path


def test_round_trip_and_merges(kimi_dir):
    tok = load_tokenizer(kimi_dir)
    assert isinstance(tok, TiktokenTokenizer)
    for text in CORPUS + _random_texts(100, seed=2):
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)
    # BPE merges apply: trained text needs far fewer tokens than bytes.
    assert len(tok.encode(CORPUS[1])) < len(CORPUS[1].encode("utf-8")) // 2
    # No merge crosses a piece boundary of K2's pattern.
    ranks = read_bpe_ranks(kimi_dir / "tiktoken.model")
    id_to_bytes = {rank: token for token, rank in ranks.items()}
    for text in CORPUS:
        offsets, position = set(), 0
        for piece in _reference_pieces(text):
            position += len(piece.encode("utf-8"))
            offsets.add(position)
        position, ends = 0, set()
        for i in tok.encode(text):
            position += len(id_to_bytes[i])
            ends.add(position)
        assert offsets <= ends


def test_special_and_tool_call_tokens_map_to_their_ids(kimi_dir):
    tok = load_tokenizer(kimi_dir)
    config = json.loads((kimi_dir / "tokenizer_config.json").read_text())
    named = {entry["content"]: int(i) for i, entry in config["added_tokens_decoder"].items()}
    num_ranks = len(read_bpe_ranks(kimi_dir / "tiktoken.model"))
    assert tok.vocab_size == num_ranks + 256
    for token, token_id in named.items():
        assert tok.token_to_id(token) == token_id
        assert tok.encode(f"x{token}y") == [*tok.encode("x"), token_id, *tok.encode("y")]
        assert tok.decode([token_id]) == token
    assert tok.token_to_id(f"<|reserved_token_{num_ranks + 5}|>") == num_ranks + 5
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (
        named["[BOS]"], named["[EOS]"], named["[PAD]"])
    assert tok.stop_token_ids == [named["[EOS]"], named["<|im_end|>"]]
    assert tok.encode("hi", add_special_tokens=True)[0] == named["[BOS]"]
    ranks = read_bpe_ranks(kimi_dir / "tiktoken.model")
    word = max((t for t in ranks if t.isascii() and t.isalpha()), key=len)
    assert len(word) > 3 and tok.token_to_id(word.decode()) == ranks[word]
    assert tok.token_to_id("no-such-token-zz") is None
    text = "<|tool_call_begin|>functions.f:0<|tool_call_end|>"
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == "functions.f:0"


def test_chat_template_with_tool_calls(kimi_dir):
    tok = load_tokenizer(kimi_dir)
    dialog = [
        {"role": "user", "content": "Weather in Beijing? 天气"},
        {"role": "assistant", "content": "Checking.", "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"location": "Beijing"}'}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "sunny 晴"},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    text = tok.apply_chat_template(dialog, tools=tools, add_generation_prompt=True, tokenize=False)
    assert text == ByteTokenizer().apply_chat_template(dialog, tools=tools, add_generation_prompt=True, tokenize=False)
    ids = tok.apply_chat_template(dialog, tools=tools, add_generation_prompt=True)
    for token in K2_CHAT_TOKENS:
        if token in text:
            assert tok.token_to_id(token) in ids
    assert ids.count(tok.token_to_id("<|tool_call_begin|>")) == 1
    assert tok.decode(ids) == text
    completion = tok.decode(tok.encode(
        'Ok<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:1<|tool_call_argument_begin|>'
        '{"location": "北京"}<|tool_call_end|><|tool_calls_section_end|><|im_end|>'))
    assert parse_tool_calls(completion)[1][0].arguments == '{"location": "北京"}'


def test_loader_prefers_tokenizer_json_and_reports_bad_files(tmp_path, kimi_dir):
    (tmp_path / "tiktoken.model").write_text("not-base64!! 0\n")
    with pytest.raises(ValueError, match="tiktoken.model:1"):
        load_tokenizer(tmp_path)
    (tmp_path / "tiktoken.model").write_text((kimi_dir / "tiktoken.model").read_text())
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"added_tokens_decoder": {"3": {"content": "[EOS]"}}}))
    with pytest.raises(ValueError, match="is a BPE rank"):
        load_tokenizer(tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="tiktoken.model"):
        load_tokenizer(empty)


def test_long_texts_are_encoded_in_k2s_chunks(kimi_dir):
    assert encode_chunks("aaaa  bbbbbb c", max_chars=100, max_run=3) == ["aaa", "a  bbb", "bbb c"]
    assert encode_chunks("x" * 10, max_chars=4, max_run=100) == ["xxxx", "xxxx", "xx"]
    assert encode_chunks("") == []
    tok = load_tokenizer(kimi_dir)
    # One 25k+ run of letters, cut between the "h" and "e" of a "weather" (merged as "he").
    text = "abcde" + "weather" * (MAX_RUN_CHARS // 7 + 30) + "  北京" * 10
    pieces = encode_chunks(text)
    assert len(pieces) == 2 and "".join(pieces) == text and pieces[1].startswith("er")
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert ids == [i for piece in pieces for i in tok.encode(piece)]
    assert ids != tok._encoding.encode(text)  # the cut changes the tokens, as in K2's tokenizer
