"""The tiktoken BPE format Kimi K2 ships (``tiktoken.model``) and K2's pre-tokenisation pattern.

``tiktoken.model`` holds one token per line: the token's bytes in base64, a space, its rank
(= its id). Special tokens are not in it: they follow the ranks (``tokenizer_config.json``
names some of them, the rest of K2's 256 reserved ids are ``<|reserved_token_{id}|>``).

K2's pattern splits Han runs off and otherwise follows o200k_base. Its letter classes
exclude Han with a character-class intersection, ``[\\p{Lu}...&&[^\\p{Han}]]``. tiktoken
compiles patterns with fancy-regex, which hands classes to Rust's ``regex`` crate; that
crate implements ``&&`` as intersection, so tiktoken takes ``KIMI_PAT_STR`` verbatim
(``tests/test_tiktoken_tokenizer.py`` checks the splits against Python's ``regex`` in V1
mode, where ``&&`` also means intersection). Engines without class set operations do not
reject the pattern, they misread it: PCRE2 and ``regex`` in its default V0 mode take
``&&[^`` as literal characters. ``without_class_intersections`` rewrites each
``[A&&[^B]]`` as ``(?:(?![B])[A])``, the same set of characters for engines with
lookahead; the loader falls back to it if a tiktoken build rejects the original.
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path

# tokenization_kimi.py (Kimi-K2-Instruct), alternative by alternative.
KIMI_PAT_STR = "|".join(
    [
        r"""[\p{Han}]+""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"""
        r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+"""
        r"""[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

# K2 reserves this many ids after the ranks for special tokens.
KIMI_NUM_RESERVED_SPECIAL_TOKENS = 256

# As tokenization_kimi.py (and Llama 3's tokenizer): text is encoded in chunks of at most
# this many characters, each cut further so that no piece holds a run of more than
# MAX_RUN_CHARS whitespace or non-whitespace characters (fancy-regex backtracks badly on
# huge runs). The cuts are part of the tokenisation: ids match K2's only with the same cuts.
MAX_ENCODE_CHARS = 400_000
MAX_RUN_CHARS = 25_000


def encode_chunks(text: str, max_chars: int = MAX_ENCODE_CHARS, max_run: int = MAX_RUN_CHARS) -> list[str]:
    """The pieces K2's tokenizer encodes separately (they concatenate to ``text``)."""
    pieces: list[str] = []
    for start in range(0, len(text), max_chars):
        pieces.extend(_cut_long_runs(text[start : start + max_chars], max_run))
    return pieces


def _cut_long_runs(text: str, max_run: int) -> list[str]:
    """Cut ``text`` before the character that would make a whitespace / non-whitespace run
    longer than ``max_run`` (the run then restarts at that character)."""
    pieces: list[str] = []
    piece_start, run_length, run_is_space = 0, 0, text[:1].isspace()
    for index, char in enumerate(text):
        is_space = char.isspace()
        if is_space != run_is_space:
            run_length, run_is_space = 1, is_space
            continue
        run_length += 1
        if run_length > max_run:
            pieces.append(text[piece_start:index])
            piece_start, run_length = index, 1
    pieces.append(text[piece_start:])
    return pieces

# [A&&[^B]] where A and B are flat class bodies (escapes allowed, no nested brackets).
_NEGATED_INTERSECTION = re.compile(r"\[((?:\\.|[^\[\]\\&])+)&&\[\^((?:\\.|[^\[\]\\])+)\]\]")


def without_class_intersections(pattern: str) -> str:
    """Rewrite ``[A&&[^B]]`` classes as ``(?:(?![B])[A])`` (same characters, no set operations)."""
    rewritten = _NEGATED_INTERSECTION.sub(r"(?:(?![\2])[\1])", pattern)
    if "&&" in rewritten:
        raise ValueError("only class intersections of the form [A&&[^B]] can be rewritten")
    return rewritten


def read_bpe_ranks(path: str | Path) -> dict[bytes, int]:
    """Parse a ``tiktoken.model`` file: ``base64(token) rank`` per line."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise ValueError(f"{path}:{number}: expected 'base64-token rank', got {line[:80]!r}") from None
    if len(set(ranks.values())) != len(ranks):
        raise ValueError(f"{path}: two tokens share a rank")
    return ranks


def write_bpe_ranks(path: str | Path, ranks: dict[bytes, int]) -> None:
    """Write ranks in the ``tiktoken.model`` format, lowest rank first."""
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda x: x[1])]
    Path(path).write_text("\n".join(lines) + "\n")
