"""Packing, targets and rank sharding of training batches."""

from __future__ import annotations

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.trainer.data import (
    LMSequence,
    RLSample,
    build_micro_batches,
    count_targets,
    document_targets,
    group_indices,
    pack_documents,
    rank_share,
    validate_sequences,
)
from k2rl.trainer.losses import IGNORE_INDEX as X


def test_targets_shift_and_respect_the_loss_mask() -> None:
    assert document_targets(LMSequence((1, 2, 3, 4))) == [2, 3, 4, X]
    sft = LMSequence((1, 2, 3, 4), (False, False, True, True))
    assert document_targets(sft) == [X, 3, 4, X]


def test_packing_keeps_order_and_gives_long_documents_their_own_row() -> None:
    assert pack_documents([3, 3, 3, 10, 2], 6) == [[0, 1], [2], [3], [4]]
    with pytest.raises(ValueError):
        pack_documents([1], 0)


def test_micro_batch_rows_restart_positions_per_document() -> None:
    seqs = [LMSequence((1, 2, 3)), LMSequence((4, 5), (False, True))]
    (mb,) = build_micro_batches(seqs, 8)
    assert mb.input_ids.tolist() == [[1, 2, 3, 4, 5]]
    assert mb.targets.tolist() == [[2, 3, X, 5, X]]
    assert mb.position_ids.tolist() == [[0, 1, 2, 0, 1]]
    assert mb.document_ids.tolist() == [[0, 0, 0, 1, 1]]
    assert mb.sample_index.tolist() == [[0, 0, -1, 1, -1]]
    assert mb.num_targets == 3 == count_targets(seqs)


def test_rank_share_partitions_micro_batches() -> None:
    batches = build_micro_batches([LMSequence((1, 2))] * 5, 2)
    shares = [rank_share(batches, r, 2) for r in range(2)]
    assert [len(s) for s in shares] == [3, 2]
    assert sorted(d for s in shares for mb in s for d in mb.documents) == list(range(5))


def test_rl_sample_masks_prompt_and_tool_tokens() -> None:
    sample = RLSample("t", "p", (7, 8), (1, 2, 3), (-0.1, 0.0, -0.3), (True, False, True), 1.0)
    seq = sample.as_sequence()
    assert document_targets(seq) == [X, 1, X, 3, X]
    assert sample.response_tokens == 2
    assert group_indices([sample, sample, RLSample("u", "q", (1,), (1,), (0.0,), (True,), 0.0)]) == [0, 0, 1]


@pytest.mark.parametrize(
    ("seq", "message"),
    [
        (LMSequence((1,)), "at least 2"),
        (LMSequence((1, 999)), "outside the vocabulary"),
        (LMSequence((1, 2), (True,)), "loss_mask has 1"),
        (LMSequence((1, 2), (True, False)), "selects no target"),
    ],
)
def test_validation_names_the_sequence(seq: LMSequence, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message) as error:
        validate_sequences([seq], 512, field="sequences")
    assert error.value.field is not None and error.value.field.startswith("sequences[0]")
