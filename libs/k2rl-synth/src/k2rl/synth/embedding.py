"""Offline text embeddings for tool descriptions (dedup and the coverage map).

The model is WordLlama's ``l2_supercat`` (MIT licence): static token embeddings
(32,000 Llama-2 tokens x 256 dims, float16, trained for sentence similarity) that the
``wordllama`` wheel on PyPI ships inside the package, next to its tokenizer file. A text's
embedding is the mean of its token vectors, L2-normalised, so cosine similarity is a dot
product. Nothing is downloaded at run time: the files are read from the installed package
with ``safetensors`` and ``tokenizers``, and wordllama's own Python loader is not used
(its loader can fall back to downloading, and importing it configures the root logger).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
from safetensors import safe_open
from tokenizers import Tokenizer

from k2rl.core.errors import FailedPrecondition, InvalidArgument
from k2rl.synth.tools import ToolSpec

WORDLLAMA_WEIGHTS = "weights/l2_supercat_256.safetensors"
WORDLLAMA_TOKENIZER = "tokenizers/l2_supercat_tokenizer_config.json"
WORDLLAMA_DIMS = (64, 128, 256)  # matryoshka-trained: leading columns are a smaller model


class TextEmbedder(Protocol):
    """Maps texts to unit-length float32 rows; equal texts give equal rows."""

    name: str
    dim: int

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


class WordLlamaEmbedder:
    """Mean-pooled static token embeddings read from the installed ``wordllama`` package."""

    def __init__(self, table: np.ndarray, tokenizer: Tokenizer, *, name: str) -> None:
        self._table = table
        self._tokenizer = tokenizer
        self.name = name
        self.dim = table.shape[1]

    @classmethod
    def load(cls, dim: int = 256) -> WordLlamaEmbedder:
        if dim not in WORDLLAMA_DIMS:
            raise InvalidArgument(f"embedding dim must be one of {WORDLLAMA_DIMS}, got {dim}", field="dim")
        root = _wordllama_package_dir()
        with safe_open(str(root / WORDLLAMA_WEIGHTS), framework="np") as weights:
            table = weights.get_tensor("embedding.weight")[:, :dim].astype(np.float32)
        tokenizer = Tokenizer.from_file(str(root / WORDLLAMA_TOKENIZER))
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return cls(table, tokenizer, name=f"wordllama-l2_supercat-{dim}")

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit rows; a text with no tokens maps to the zero vector."""
        if isinstance(texts, str):
            raise InvalidArgument("embed() takes a sequence of texts, not one string", field="texts")
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        for row, encoding in enumerate(encodings):
            if encoding.ids:
                out[row] = self._table[encoding.ids].mean(axis=0)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return np.divide(out, norms, out=np.zeros_like(out), where=norms > 0)


@functools.cache
def default_embedder() -> WordLlamaEmbedder:
    """The shared 256-dim embedder (loaded once per process, about 32 MB)."""
    return WordLlamaEmbedder.load(256)


def tool_text(spec: ToolSpec) -> str:
    """The text that stands for a tool in embedding space: its words-split name and description."""
    return f"{spec.name.replace('_', ' ').replace('-', ' ')}: {spec.description}"


def embed_tools(specs: Sequence[ToolSpec], embedder: TextEmbedder | None = None) -> np.ndarray:
    """Unit rows, one per tool, in order."""
    return (embedder or default_embedder()).embed([tool_text(spec) for spec in specs])


def _wordllama_package_dir() -> Path:
    spec = importlib.util.find_spec("wordllama")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise FailedPrecondition("the embedding model needs the 'wordllama' package (pip install wordllama)")
    root = Path(next(iter(spec.submodule_search_locations)))
    for relative in (WORDLLAMA_WEIGHTS, WORDLLAMA_TOKENIZER):
        if not (root / relative).is_file():
            raise FailedPrecondition(f"wordllama is installed at {root} but lacks its bundled {relative}")
    return root
