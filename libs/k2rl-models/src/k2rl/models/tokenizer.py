"""Tokenizers: a byte-level one for the presets, HF ``tokenizer.json`` files, and the
tiktoken format Kimi K2 ships (``tiktoken.model``).

All expose the same small interface (``encode``, ``decode``, ``apply_chat_template``,
special-token ids, ``stop_token_ids``) so trainer, inference and controller code does not
care which one a model uses.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from k2rl.models.chat import IM_END, K2_CHAT_TEMPLATE, K2_CHAT_TOKENS, render_chat
from k2rl.models.tiktoken_bpe import (
    KIMI_NUM_RESERVED_SPECIAL_TOKENS,
    KIMI_PAT_STR,
    encode_chunks,
    read_bpe_ranks,
    without_class_intersections,
)


class Tokenizer(Protocol):
    vocab_size: int
    bos_token_id: int | None
    eos_token_id: int | None
    pad_token_id: int | None

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]: ...

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str: ...

    def token_to_id(self, token: str) -> int | None: ...

    @property
    def stop_token_ids(self) -> list[int]: ...

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **variables: Any,
    ) -> list[int] | str: ...


class ByteTokenizer:
    """Ids 0..255 are UTF-8 bytes; special tokens follow at 256, 257, ...

    Special-token strings inside text (e.g. from a chat template) encode to their ids, as
    HF tokenizers do for added special tokens.
    """

    BOS, EOS, PAD, UNK = "[BOS]", "[EOS]", "[PAD]", "[UNK]"

    def __init__(self, vocab_size: int = 512, special_tokens: Sequence[str] | None = None) -> None:
        specials = list(special_tokens or (self.BOS, self.EOS, self.PAD, self.UNK, *K2_CHAT_TOKENS))
        if 256 + len(specials) > vocab_size:
            raise ValueError("vocab_size too small for 256 bytes plus the special tokens")
        self.vocab_size = vocab_size
        self.special_to_id = {tok: 256 + i for i, tok in enumerate(specials)}
        self.id_to_special = {i: tok for tok, i in self.special_to_id.items()}
        self._split = re.compile(
            "(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")"
        )
        self.bos_token_id = self.special_to_id.get(self.BOS)
        self.eos_token_id = self.special_to_id.get(self.EOS)
        self.pad_token_id = self.special_to_id.get(self.PAD)
        self.chat_template = K2_CHAT_TEMPLATE

    def token_to_id(self, token: str) -> int | None:
        return self.special_to_id.get(token)

    @property
    def stop_token_ids(self) -> list[int]:
        return [i for i in (self.eos_token_id, self.special_to_id.get(IM_END)) if i is not None]

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        ids: list[int] = (
            [self.bos_token_id] if add_special_tokens and self.bos_token_id is not None else []
        )
        for piece in self._split.split(text):
            if piece in self.special_to_id:
                ids.append(self.special_to_id[piece])
            elif piece:
                ids.extend(piece.encode("utf-8"))
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        out: list[str] = []
        pending = bytearray()
        for i in ids:
            i = int(i)
            if i < 256:
                pending.append(i)
                continue
            out.append(pending.decode("utf-8", errors="replace"))
            pending.clear()
            if not skip_special_tokens:
                out.append(self.id_to_special.get(i, self.UNK))
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **variables: Any,
    ) -> list[int] | str:
        text = render_chat(
            self.chat_template,
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.BOS,
            eos_token=self.EOS,
            **variables,
        )
        return self.encode(text) if tokenize else text


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json stores special tokens as a string or an AddedToken dict."""
    if isinstance(value, Mapping):
        return value.get("content")
    return value


def _read_tokenizer_config(path: Path) -> dict[str, Any]:
    config_file = path / "tokenizer_config.json"
    return json.loads(config_file.read_text()) if config_file.exists() else {}


def _read_chat_template(path: Path, config: Mapping[str, Any]) -> str | None:
    """``chat_template.jinja`` if present, else the config's (a string or a named list)."""
    jinja_file = path / "chat_template.jinja"
    if jinja_file.exists():
        return jinja_file.read_text()
    template = config.get("chat_template")
    if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
        named = {t["name"]: t["template"] for t in template}
        template = named.get("default") or next(iter(named.values()), None)
    return template


def _named_special_tokens(config: Mapping[str, Any]) -> dict[str, str]:
    return {
        key: _token_content(config[key])
        for key in ("bos_token", "eos_token", "pad_token", "unk_token")
        if config.get(key) is not None
    }


class _DirectoryTokenizer(abc.ABC):
    """What tokenizers loaded from a directory share: named special tokens from
    ``tokenizer_config.json`` and its chat template, rendered as HF does."""

    chat_template: str | None
    special_tokens: dict[str, str]
    eos_token_id: int | None

    @abc.abstractmethod
    def token_to_id(self, token: str) -> int | None: ...

    @abc.abstractmethod
    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]: ...

    @property
    def stop_token_ids(self) -> list[int]:
        ids = [self.eos_token_id, self.token_to_id(IM_END)]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def apply_chat_template(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        **variables: Any,
    ) -> list[int] | str:
        if self.chat_template is None:
            raise ValueError("this tokenizer has no chat template")
        text = render_chat(
            self.chat_template,
            messages,
            tools=tools,
            add_generation_prompt=add_generation_prompt,
            **{**self.special_tokens, **variables},
        )
        # As HF: the template already placed BOS etc., so no post-processor specials.
        return self.encode(text, add_special_tokens=False) if tokenize else text


class HFTokenizer(_DirectoryTokenizer):
    """A ``tokenizers`` tokenizer.json + tokenizer_config.json (special tokens, chat template)."""

    def __init__(
        self, tokenizer: Any, config: Mapping[str, Any], chat_template: str | None
    ) -> None:
        self._tok = tokenizer
        self.config = dict(config)
        self.chat_template = chat_template
        self.special_tokens = _named_special_tokens(config)
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = self._special_id("bos_token")
        self.eos_token_id = self._special_id("eos_token")
        self.pad_token_id = self._special_id("pad_token")

    @classmethod
    def from_dir(cls, path: str | Path) -> HFTokenizer:
        from tokenizers import Tokenizer as _Tokenizer  # optional dependency, loaded on use

        path = Path(path)
        config = _read_tokenizer_config(path)
        return cls(_Tokenizer.from_file(str(path / "tokenizer.json")), config, _read_chat_template(path, config))

    def _special_id(self, key: str) -> int | None:
        token = self.special_tokens.get(key)
        return None if token is None else self._tok.token_to_id(token)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)


    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)



class TiktokenTokenizer(_DirectoryTokenizer):
    """A Kimi-K2-style directory: ``tiktoken.model`` BPE ranks + ``tokenizer_config.json``.

    As K2's ``tokenization_kimi.py``: ids ``0..len(ranks)-1`` are the ranks, the next
    ``KIMI_NUM_RESERVED_SPECIAL_TOKENS`` ids are special tokens, named by the config's
    ``added_tokens_decoder`` or ``<|reserved_token_{id}|>``. Special-token strings in text
    encode to their ids (as HF does for added tokens). ``pat_str`` in the config overrides
    K2's pre-tokenisation pattern.
    """

    def __init__(
        self,
        ranks: Mapping[bytes, int],
        special_tokens: Mapping[str, int],
        config: Mapping[str, Any],
        chat_template: str | None,
        pat_str: str = KIMI_PAT_STR,
        name: str = "tiktoken",
    ) -> None:
        import tiktoken  # optional dependency, loaded on use

        self.config = dict(config)
        self.chat_template = chat_template
        self.special_to_id = dict(special_tokens)
        self.id_to_special = {i: tok for tok, i in self.special_to_id.items()}
        self._encoding = _tiktoken_encoding(tiktoken, name, pat_str, dict(ranks), self.special_to_id)
        self.vocab_size = max(len(ranks), max(self.id_to_special, default=-1) + 1)
        self.special_tokens = _named_special_tokens(config)
        self.bos_token_id = self.token_to_id(self.special_tokens.get("bos_token"))
        self.eos_token_id = self.token_to_id(self.special_tokens.get("eos_token"))
        self.pad_token_id = self.token_to_id(self.special_tokens.get("pad_token"))

    @classmethod
    def from_dir(cls, path: str | Path) -> TiktokenTokenizer:
        path = Path(path)
        ranks = read_bpe_ranks(path / "tiktoken.model")
        config = _read_tokenizer_config(path)
        return cls(
            ranks,
            _kimi_special_tokens(len(ranks), config),
            config,
            _read_chat_template(path, config),
            pat_str=config.get("pat_str", KIMI_PAT_STR),
            name=path.name or "tiktoken",
        )

    def token_to_id(self, token: str | None) -> int | None:
        if token is None:
            return None
        if token in self.special_to_id:
            return self.special_to_id[token]
        try:
            return self._encoding.encode_single_token(token.encode("utf-8"))
        except KeyError:
            return None


    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        ids = [i for piece in encode_chunks(text) for i in self._encoding.encode(piece, allowed_special="all")]
        if add_special_tokens and self.bos_token_id is not None:
            ids.insert(0, self.bos_token_id)
        return ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.id_to_special]
        return self._encoding.decode(ids, errors="replace")



def _tiktoken_encoding(
    tiktoken: Any, name: str, pat_str: str, ranks: dict[bytes, int], special_tokens: dict[str, int]
) -> Any:
    """A ``tiktoken.Encoding``; a pattern with class intersections that this tiktoken build
    rejects is retried without them (see ``k2rl.models.tiktoken_bpe``)."""
    try:
        return tiktoken.Encoding(name, pat_str=pat_str, mergeable_ranks=ranks, special_tokens=special_tokens)
    except ValueError:
        if "&&" not in pat_str:
            raise
        portable = without_class_intersections(pat_str)
        return tiktoken.Encoding(name, pat_str=portable, mergeable_ranks=ranks, special_tokens=special_tokens)


def _kimi_special_tokens(num_ranks: int, config: Mapping[str, Any]) -> dict[str, int]:
    """K2's special ids: the reserved block after the ranks, named by ``added_tokens_decoder``
    (ids outside the block are accepted too, as long as they do not collide with a rank)."""
    named: dict[int, str] = {}
    for key, entry in config.get("added_tokens_decoder", {}).items():
        token_id, content = int(key), _token_content(entry)
        if token_id < num_ranks:
            raise ValueError(f"added token {content!r} has id {token_id}, which is a BPE rank (< {num_ranks})")
        if content is not None:
            named[token_id] = content
    reserved = range(num_ranks, num_ranks + KIMI_NUM_RESERVED_SPECIAL_TOKENS)
    ids = sorted(set(reserved) | set(named))
    return {named.get(i, f"<|reserved_token_{i}|>"): i for i in ids}


def load_tokenizer(path_or_preset: str | Path) -> ByteTokenizer | HFTokenizer | TiktokenTokenizer:
    """Byte tokenizer for a preset name; for a directory, ``tokenizer.json`` (HF
    ``tokenizers``) or else ``tiktoken.model`` (Kimi K2's format)."""
    path = Path(path_or_preset)
    if (path / "tokenizer.json").exists():
        return HFTokenizer.from_dir(path)
    if (path / "tiktoken.model").exists():
        return TiktokenTokenizer.from_dir(path)
    if path.is_dir():
        raise FileNotFoundError(f"no tokenizer.json or tiktoken.model in {path}")
    from k2rl.models.presets import get_preset

    return ByteTokenizer(vocab_size=get_preset(str(path_or_preset)).vocab_size)
