"""Coverage report of the tool repository, like K2 report Figure 9.

Every tool's name and description is embedded (``embedding.py``), the embeddings are
projected to 2-D with t-SNE (scikit-learn; plain PCA when there are too few tools for
t-SNE's perplexity), and the points are drawn coloured by source (mcp / openai /
synthetic) into a PNG. A JSON summary next to it gives counts per source, domain and
category and the 2-D point of every tool.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.manifold import TSNE

from k2rl.core.errors import InvalidArgument
from k2rl.synth.embedding import TextEmbedder, default_embedder, embed_tools
from k2rl.synth.tools import SOURCES, ToolSpec

SOURCE_COLORS = {"mcp": "#1f77b4", "openai": "#2ca02c", "synthetic": "#ff7f0e"}
MARKER_ALPHA = 0.8
MIN_TOOLS_FOR_TSNE = 6
METHOD_LABELS = {"tsne": "t-SNE", "pca": "PCA"}
PNG_NAME = "tool_coverage.png"
SUMMARY_NAME = "tool_coverage.json"


@dataclass(frozen=True)
class CoverageReport:
    png_path: Path
    summary_path: Path
    summary: dict


def write_coverage_report(
    specs: Sequence[ToolSpec],
    out_dir: str | os.PathLike,
    *,
    embedder: TextEmbedder | None = None,
    seed: int = 0,
) -> CoverageReport:
    """Embed, project and plot ``specs``; write ``tool_coverage.png`` and ``tool_coverage.json``."""
    if not specs:
        raise InvalidArgument("coverage report needs at least one tool", field="specs")
    embedder = embedder or default_embedder()
    points, method = project_2d(embed_tools(specs, embedder), seed=seed)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png_path = out_dir / PNG_NAME
    _plot(specs, points, method, png_path)
    summary = _summary(specs, points, method=method, embedder_name=embedder.name, png_name=png_path.name)
    summary_path = out_dir / SUMMARY_NAME
    summary_path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return CoverageReport(png_path, summary_path, summary)


def project_2d(vectors: np.ndarray, *, seed: int) -> tuple[np.ndarray, str]:
    """2-D points for ``vectors`` and the method used ("tsne" or, for few points, "pca")."""
    count = len(vectors)
    if count < MIN_TOOLS_FOR_TSNE:
        return _pca_2d(vectors), "pca"
    perplexity = min(30.0, (count - 1) / 3)
    tsne = TSNE(n_components=2, perplexity=perplexity, metric="cosine", init="pca", random_state=seed)
    return tsne.fit_transform(vectors.astype(np.float64)), "tsne"


def _pca_2d(vectors: np.ndarray) -> np.ndarray:
    centered = vectors - vectors.mean(axis=0)
    _, _, components = np.linalg.svd(centered, full_matrices=False)
    points = centered @ components[:2].T
    return np.pad(points, ((0, 0), (0, 2 - points.shape[1])))  # fewer than 2 components for 1 point


def _plot(specs: Sequence[ToolSpec], points: np.ndarray, method: str, path: Path) -> None:
    figure = Figure(figsize=(8, 6), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    sources = [spec.source for spec in specs]
    for source in SOURCES:
        mask = np.array([item == source for item in sources])
        if mask.any():
            axes.scatter(points[mask, 0], points[mask, 1], s=18, alpha=MARKER_ALPHA, color=SOURCE_COLORS[source],
                         label=f"{source} ({int(mask.sum())})")
    axes.set_title(f"Tool coverage: {len(specs)} tools, {METHOD_LABELS[method]} of description embeddings")
    axes.set_xticks([])
    axes.set_yticks([])
    axes.legend(title="source", loc="best")
    figure.tight_layout()
    figure.savefig(path, format="png")


def _summary(specs: Sequence[ToolSpec], points: np.ndarray, *, method: str, embedder_name: str,
             png_name: str) -> dict:
    return {
        "tools": len(specs),
        "by_source": dict(Counter(spec.source for spec in specs)),
        "by_domain": dict(Counter(spec.domain for spec in specs)),
        "by_category": dict(Counter(spec.category for spec in specs)),
        "embedder": embedder_name,
        "projection": method,
        "png": png_name,
        "points": [
            {"name": spec.name, "source": spec.source, "domain": spec.domain,
             "x": round(float(x), 4), "y": round(float(y), 4)}
            for spec, (x, y) in zip(specs, points, strict=True)
        ],
    }
