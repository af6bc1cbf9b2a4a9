"""Stage 1: the offline embedding model shipped in the wordllama wheel."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.synth.embedding import WordLlamaEmbedder, default_embedder, embed_tools
from k2rl.synth.tools import load_fixture_tools


def test_loads_and_embeds_with_the_network_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the embedding model tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    embedder = WordLlamaEmbedder.load(128)
    vectors = embedder.embed(["read a file", "weather forecast"])
    assert vectors.shape == (2, 128) and embedder.dim == 128


def test_embeddings_are_deterministic_unit_rows():
    texts = ["Create a calendar event", "List the commits of a git repository", "Create a calendar event"]
    first = default_embedder().embed(texts)
    again = WordLlamaEmbedder.load(256).embed(texts)
    assert first.dtype == np.float32 and first.shape == (3, 256)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first[0], first[2])
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, rtol=1e-5)


def test_similar_meanings_are_closer_than_unrelated_ones():
    read, open_file, weather = default_embedder().embed(
        ["Read a text file from disk", "Open a file and return its contents", "Get the weather forecast for a city"])
    assert read @ open_file > read @ weather + 0.2


def test_text_without_tokens_maps_to_zero_and_bad_arguments_are_refused():
    assert not default_embedder().embed([""]).any()
    with pytest.raises(InvalidArgument, match="sequence of texts"):
        default_embedder().embed("one string")
    with pytest.raises(InvalidArgument, match="dim must be one of"):
        WordLlamaEmbedder.load(100)


def test_each_fixture_tool_is_nearest_to_a_tool_of_its_own_domain_mostly():
    specs = load_fixture_tools()
    similarities = embed_tools(specs) @ embed_tools(specs).T
    np.fill_diagonal(similarities, -1.0)
    same_domain = [specs[int(row.argmax())].domain == spec.domain for spec, row in zip(specs, similarities, strict=True)]
    assert sum(same_domain) >= 0.75 * len(specs)
