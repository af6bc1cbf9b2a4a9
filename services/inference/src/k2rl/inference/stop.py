"""Stop strings and streamed text.

Token ids are never re-tokenised: a stop string ends a sample once the decoded output
contains it, and the sample's token ids keep every sampled token (including those that
completed the stop string, proto semantics). Only the returned *text* is trimmed.
"""

from __future__ import annotations

from collections.abc import Sequence

from k2rl.models.tokenizer import Tokenizer

# A token decodes to at least one byte; a character is at most 4 UTF-8 bytes.
_BYTES_PER_CHAR = 4


def match_stop_string(tokenizer: Tokenizer, output_ids: Sequence[int], stop_strings: Sequence[str]) -> str | None:
    """The stop string completed by the last token of ``output_ids``, if any.

    Decodes only a tail window long enough to contain the longest stop string, and only
    reports matches that end inside the last token (earlier ones would have stopped the
    sample already).
    """
    if not stop_strings or not output_ids:
        return None
    window = _BYTES_PER_CHAR * max(len(s) for s in stop_strings) + 2
    tail = list(output_ids[-window:])
    text = tokenizer.decode(tail)
    before = tokenizer.decode(tail[:-1])
    for stop in stop_strings:
        if text.find(stop, max(0, len(before) - len(stop) + 1)) >= 0:
            return stop
    return None


def _held_back(text: str, stop_strings: Sequence[str]) -> int:
    """Characters at the end of ``text`` that may still turn into a stop string or a character."""
    hold = 0
    for stop in stop_strings:
        for k in range(min(len(stop) - 1, len(text)), hold, -1):
            if stop.startswith(text[-k:]):
                hold = k
                break
    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for its next bytes
        hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
    return hold


def visible_text(
    tokenizer: Tokenizer, output_ids: Sequence[int], stop_strings: Sequence[str], matched: str | None, final: bool
) -> str:
    """Output text that may be shown: up to a matched stop string (excluded); while
    unfinished, without a tail that may still become a stop string."""
    text = tokenizer.decode(list(output_ids))
    if matched:
        index = text.find(matched)
        return text if index < 0 else text[:index]
    if final:
        return text
    hold = _held_back(text, stop_strings)
    return text[: len(text) - hold] if hold else text
