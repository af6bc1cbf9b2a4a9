"""Tool dedup: by normalised name, then by embedding cosine similarity (K2 report 3.1.1).

Tools are considered in priority order: real tools (mcp / openai) before synthetic ones,
otherwise in input order. A tool is dropped when a kept tool has the same normalised name
or a description embedding at least ``threshold`` cosine-similar; so a synthetic tool never
evicts a real one, and among equals the first wins. Kept tools come back in input order.

Measured with the default WordLlama embedder: paraphrases of one tool score about
0.82-0.96, distinct tools of one domain (create_event / update_event, git_log /
git_commit) 0.55-0.68, unrelated tools below 0.2; hence the 0.8 default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from k2rl.core.errors import InvalidArgument
from k2rl.synth.embedding import TextEmbedder, embed_tools
from k2rl.synth.tools import ToolSpec, normalize_tool_name

DEFAULT_SIMILARITY_THRESHOLD = 0.8


@dataclass(frozen=True)
class DroppedTool:
    tool: ToolSpec
    kept_instead: ToolSpec
    reason: str  # "name" or "embedding"
    similarity: float  # cosine similarity to kept_instead (1.0 for a name match)


@dataclass(frozen=True)
class DedupResult:
    kept: list[ToolSpec]
    dropped: list[DroppedTool]


def dedup_tools(
    specs: Sequence[ToolSpec],
    *,
    threshold: float | None = DEFAULT_SIMILARITY_THRESHOLD,
    embedder: TextEmbedder | None = None,
) -> DedupResult:
    """Drop name duplicates and, unless ``threshold`` is None, near-duplicates in embedding space."""
    if threshold is not None and not 0.0 < threshold <= 1.0:
        raise InvalidArgument(f"similarity threshold must be in (0, 1], got {threshold}", field="threshold")
    order = sorted(range(len(specs)), key=lambda index: (specs[index].source == "synthetic", index))
    vectors = embed_tools(specs, embedder) if threshold is not None and specs else None
    kept: list[int] = []
    kept_by_name: dict[str, int] = {}
    dropped: list[DroppedTool] = []
    for index in order:
        spec = specs[index]
        name_key = normalize_tool_name(spec.name)
        if name_key in kept_by_name:
            dropped.append(DroppedTool(spec, specs[kept_by_name[name_key]], "name", 1.0))
            continue
        if vectors is not None and kept:
            similarities = vectors[kept] @ vectors[index]
            best = int(np.argmax(similarities))
            if similarities[best] >= threshold:
                dropped.append(DroppedTool(spec, specs[kept[best]], "embedding", float(similarities[best])))
                continue
        kept.append(index)
        kept_by_name[name_key] = index
    return DedupResult(kept=[specs[index] for index in sorted(kept)], dropped=dropped)
