"""Packed rows (document masking) and padded rows give the same logits as separate forwards."""

from __future__ import annotations

import torch

from k2rl.models.context import packed_positions

ATOL = 2e-5


def _docs(vocab: int, lengths=(5, 9, 3)) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randint(0, vocab, (n,), generator=g) for n in lengths]


def _separate(model, docs):
    with torch.no_grad():
        return torch.cat([model(d[None])[0] for d in docs])


def test_cu_seqlens_packing_matches_separate_forwards(tiny_model):
    docs = _docs(tiny_model.config.vocab_size)
    packed = torch.cat(docs)[None]
    cu_seqlens = torch.tensor([0, 5, 14, 17])
    with torch.no_grad():
        got = tiny_model(packed, cu_seqlens=cu_seqlens)[0]
        unmasked = tiny_model(packed)[0]
    torch.testing.assert_close(got, _separate(tiny_model, docs), atol=ATOL, rtol=0)
    assert (unmasked[5:] - got[5:]).abs().max() > 1e-3  # documents really were isolated


def test_position_ids_restarting_at_zero_start_new_documents(tiny_model):
    docs = _docs(tiny_model.config.vocab_size)
    packed = torch.cat(docs)[None]
    positions = torch.cat([torch.arange(len(d)) for d in docs])[None]
    with torch.no_grad():
        got = tiny_model(packed, positions)[0]
    torch.testing.assert_close(got, _separate(tiny_model, docs), atol=ATOL, rtol=0)


def test_packed_positions_from_cu_seqlens():
    positions, documents = packed_positions(torch.tensor([0, 2, 5]))
    assert positions.tolist() == [[0, 1, 0, 1, 2]]
    assert documents.tolist() == [[0, 0, 1, 1, 1]]


def test_left_and_right_padding_match_unpadded(tiny_model):
    docs = _docs(tiny_model.config.vocab_size, lengths=(6, 9))
    expected = [tiny_model(d[None])[0].detach() for d in docs]
    width, pad = 9, 0
    right = torch.full((2, width), pad)
    left = torch.full((2, width), pad)
    right_mask = torch.zeros(2, width, dtype=torch.long)
    left_mask = torch.zeros(2, width, dtype=torch.long)
    for b, d in enumerate(docs):
        right[b, : len(d)], right_mask[b, : len(d)] = d, 1
        left[b, width - len(d) :], left_mask[b, width - len(d) :] = d, 1
    with torch.no_grad():
        right_logits = tiny_model(right, attention_mask=right_mask)
        left_logits = tiny_model(left, attention_mask=left_mask)
    for b, d in enumerate(docs):
        torch.testing.assert_close(right_logits[b, : len(d)], expected[b], atol=ATOL, rtol=0)
        torch.testing.assert_close(left_logits[b, width - len(d) :], expected[b], atol=ATOL, rtol=0)


def test_packed_token_logprobs_match_separate(tiny_model):
    docs = _docs(tiny_model.config.vocab_size)
    packed = torch.cat(docs)[None]
    targets = torch.cat([torch.cat([d[1:], torch.tensor([-100])]) for d in docs])[None]
    with torch.no_grad():
        got = tiny_model.token_logprobs(
            packed, targets, cu_seqlens=torch.tensor([0, 5, 14, 17]), chunk_size=4
        )
        expected = []
        for d in docs:
            logp = torch.log_softmax(tiny_model(d[None])[0].float(), dim=-1)
            expected.append(torch.cat([logp[:-1].gather(1, d[1:, None])[:, 0], torch.zeros(1)]))
    torch.testing.assert_close(got[0], torch.cat(expected), atol=ATOL, rtol=0)
