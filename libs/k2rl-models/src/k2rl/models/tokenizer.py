"""Tokenizers: a byte-level one for the presets, and HF ``tokenizer.json`` files.

Both expose the same small interface (``encode``, ``decode``, ``apply_chat_template``,
special-token ids, ``stop_token_ids``) so trainer, inference and controller code does not
care which one a model uses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from k2rl.models.chat import IM_END, K2_CHAT_TEMPLATE, K2_CHAT_TOKENS, render_chat


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


class HFTokenizer:
    """A ``tokenizers`` tokenizer.json + tokenizer_config.json (special tokens, chat template)."""

    def __init__(
        self, tokenizer: Any, config: Mapping[str, Any], chat_template: str | None
    ) -> None:
        self._tok = tokenizer
        self.config = dict(config)
        self.chat_template = chat_template
        self.special_tokens = {
            key: _token_content(config.get(key))
            for key in ("bos_token", "eos_token", "pad_token", "unk_token")
            if config.get(key) is not None
        }
        self.vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        self.bos_token_id = self._special_id("bos_token")
        self.eos_token_id = self._special_id("eos_token")
        self.pad_token_id = self._special_id("pad_token")

    @classmethod
    def from_dir(cls, path: str | Path) -> HFTokenizer:
        from tokenizers import Tokenizer as _Tokenizer  # optional dependency, loaded on use

        path = Path(path)
        config_file = path / "tokenizer_config.json"
        config = json.loads(config_file.read_text()) if config_file.exists() else {}
        template = config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t["name"]: t["template"] for t in template}
            template = named.get("default") or next(iter(named.values()), None)
        jinja_file = path / "chat_template.jinja"
        if jinja_file.exists():
            template = jinja_file.read_text()
        return cls(_Tokenizer.from_file(str(path / "tokenizer.json")), config, template)

    def _special_id(self, key: str) -> int | None:
        token = self.special_tokens.get(key)
        return None if token is None else self._tok.token_to_id(token)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    @property
    def stop_token_ids(self) -> list[int]:
        ids = [self.eos_token_id, self._tok.token_to_id(IM_END)]
        return list(dict.fromkeys(i for i in ids if i is not None))

    def encode(self, text: str, *, add_special_tokens: bool = False) -> list[int]:
        return self._tok.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

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


def load_tokenizer(path_or_preset: str | Path) -> ByteTokenizer | HFTokenizer:
    """Byte tokenizer for a preset name; ``tokenizer.json`` tokenizer for a directory."""
    path = Path(path_or_preset)
    if (path / "tokenizer.json").exists():
        return HFTokenizer.from_dir(path)
    if path.is_dir():
        if (path / "tiktoken.model").exists():
            raise NotImplementedError(
                "tiktoken-format tokenizers (tiktoken.model) are not supported yet"
            )
        raise FileNotFoundError(f"no tokenizer.json in {path}")
    from k2rl.models.presets import get_preset

    return ByteTokenizer(vocab_size=get_preset(str(path_or_preset)).vocab_size)
