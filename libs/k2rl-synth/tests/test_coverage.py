"""Stage 1: the coverage report (2-D map of tool embeddings coloured by source, Figure 9)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from k2rl.core.errors import InvalidArgument
from k2rl.synth.coverage import MARKER_ALPHA, SOURCE_COLORS, project_2d, write_coverage_report
from k2rl.synth.embedding import embed_tools
from k2rl.synth.tools import ToolSpec, load_fixture_tools


def synthetic_variants(specs: list[ToolSpec]) -> list[ToolSpec]:
    return [ToolSpec(f"synthetic_{spec.name}", f"Simulated service: {spec.description}", spec.parameters,
                     "synthetic", domain=spec.domain, category="generated") for spec in specs]


def drawn_pixels(pixels: np.ndarray, hex_colour: str) -> int:
    """Pixels showing ``hex_colour`` at the plot's marker alpha over the white background."""
    colour = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    on_white = MARKER_ALPHA * colour + (1 - MARKER_ALPHA) * 255
    return int((np.abs(pixels - on_white).max(axis=1) <= 2).sum())


def test_report_writes_a_png_coloured_by_source_and_a_summary(tmp_path):
    real = load_fixture_tools()
    specs = real + synthetic_variants(real[:8])
    report = write_coverage_report(specs, tmp_path / "coverage", seed=3)

    with Image.open(report.png_path) as image:
        assert image.format == "PNG" and image.size == (960, 720)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
    for source in ("mcp", "openai", "synthetic"):  # every source is drawn in its colour
        assert drawn_pixels(pixels, SOURCE_COLORS[source]) > 50, source

    summary = json.loads(report.summary_path.read_text())
    assert summary == report.summary
    assert summary["tools"] == len(specs) == len(summary["points"])
    assert summary["by_source"] == {"mcp": 15, "openai": 11, "synthetic": 8}
    assert sum(summary["by_domain"].values()) == len(specs)
    assert summary["projection"] == "tsne" and summary["embedder"].startswith("wordllama")
    xs = [point["x"] for point in summary["points"]]
    assert len(set(xs)) == len(xs)  # a real projection, not a collapsed one


def test_same_seed_gives_the_same_map():
    vectors = embed_tools(load_fixture_tools())
    first, method = project_2d(vectors, seed=5)
    again, _ = project_2d(vectors, seed=5)
    assert method == "tsne" and first.shape == (len(vectors), 2)
    np.testing.assert_array_equal(first, again)


def test_few_tools_fall_back_to_pca_and_none_is_refused(tmp_path):
    report = write_coverage_report(load_fixture_tools()[:2], tmp_path)
    assert report.summary["projection"] == "pca" and report.png_path.stat().st_size > 0
    with pytest.raises(InvalidArgument, match="at least one tool"):
        write_coverage_report([], tmp_path)
