"""Training batches: validated sequences, packed into micro-batches, sharded over ranks.

A step's global batch is a list of documents (LM sequences, or RL samples = prompt +
response). They are packed back to back into rows of at most ``micro_batch_tokens``
tokens, in order; attention is masked at document boundaries (``document_ids``) and
positions restart per document, so packing changes nothing but speed. Micro-batch ``j``
runs on rank ``j % world_size``: every rank sees the same global batch and derives the
same plan, so no rank needs to be told which part is its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from k2rl.core.errors import InvalidArgument
from k2rl.trainer.losses import IGNORE_INDEX


@dataclass(frozen=True)
class LMSequence:
    """A document for a next-token loss. ``loss_mask[i]``: token i is a target (i >= 1).

    ``loss_mask=None`` trains on every token after the first (pretraining).
    """

    token_ids: tuple[int, ...]
    loss_mask: tuple[bool, ...] | None = None
    sequence_id: str = ""


@dataclass(frozen=True)
class RLSample:
    """One scored response y_i to prompt x, as the K1.5 loss needs it.

    ``model_token_mask`` marks the output tokens the policy sampled (MODEL turns); only
    they are trained on and summed into log pi(y|x). ``output_logprobs`` are log pi_old of
    the output tokens as inference reported them (0 where not sampled).
    """

    sample_id: str
    prompt_id: str
    prompt_token_ids: tuple[int, ...]
    output_token_ids: tuple[int, ...]
    output_logprobs: tuple[float, ...]
    model_token_mask: tuple[bool, ...]
    reward: float
    truncated: bool = False
    token_budget: int = 0
    stale_model_tokens: int = 0

    @property
    def response_tokens(self) -> int:
        return sum(self.model_token_mask)

    def as_sequence(self) -> LMSequence:
        mask = (False,) * len(self.prompt_token_ids) + self.model_token_mask
        return LMSequence(self.prompt_token_ids + self.output_token_ids, mask, self.sample_id)


@dataclass(frozen=True)
class MicroBatch:
    """One packed row. ``sample_index[0, i]``: which document's target token position i predicts."""

    input_ids: torch.Tensor  # [1, T] int64
    targets: torch.Tensor  # [1, T] int64, IGNORE_INDEX where not a target
    position_ids: torch.Tensor  # [1, T]
    document_ids: torch.Tensor  # [1, T]
    sample_index: torch.Tensor  # [1, T], -1 where not a target
    documents: tuple[int, ...]  # global indices of the documents in this row

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[-1])

    @property
    def num_targets(self) -> int:
        return int((self.targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device) -> MicroBatch:
        return MicroBatch(
            self.input_ids.to(device),
            self.targets.to(device),
            self.position_ids.to(device),
            self.document_ids.to(device),
            self.sample_index.to(device),
            self.documents,
        )


def validate_sequences(sequences: Sequence[LMSequence], vocab_size: int, *, field: str) -> None:
    """INVALID_ARGUMENT naming the offending sequence for anything the model cannot take."""
    if not sequences:
        raise InvalidArgument("the batch has no sequences", field=field)
    for i, seq in enumerate(sequences):
        name = f"{field}[{i}]" + (f" ({seq.sequence_id})" if seq.sequence_id else "")
        if len(seq.token_ids) < 2:
            raise InvalidArgument("a sequence needs at least 2 tokens to predict one", field=name)
        bad = [t for t in seq.token_ids if not 0 <= t < vocab_size]
        if bad:
            raise InvalidArgument(f"token id {bad[0]} outside the vocabulary [0, {vocab_size})", field=name)
        if seq.loss_mask is not None:
            if len(seq.loss_mask) != len(seq.token_ids):
                raise InvalidArgument(
                    f"loss_mask has {len(seq.loss_mask)} entries for {len(seq.token_ids)} tokens", field=name
                )
            if not any(seq.loss_mask[1:]):
                raise InvalidArgument("loss_mask selects no target token", field=name)


def document_targets(seq: LMSequence) -> list[int]:
    """Next-token targets of one document: targets[i] = token i+1 where it is trained on."""
    ids, mask = seq.token_ids, seq.loss_mask
    return [
        ids[i + 1] if mask is None or mask[i + 1] else IGNORE_INDEX for i in range(len(ids) - 1)
    ] + [IGNORE_INDEX]


def pack_documents(lengths: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Indices of documents per row, in order; a new row starts when the next would overflow.

    A document longer than ``max_tokens`` gets a row to itself (it is not split: splitting
    would cut the attention context of its later tokens).
    """
    if max_tokens <= 0:
        raise ValueError("max_tokens must be > 0")
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if rows and used + n <= max_tokens:
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows


def build_micro_batches(sequences: Sequence[LMSequence], max_tokens: int) -> list[MicroBatch]:
    """Pack ``sequences`` into rows of at most ``max_tokens`` (see ``pack_documents``)."""
    rows = pack_documents([len(s.token_ids) for s in sequences], max_tokens)
    batches = []
    for row in rows:
        ids: list[int] = []
        targets: list[int] = []
        positions: list[int] = []
        documents: list[int] = []
        owners: list[int] = []
        for doc in row:
            seq = sequences[doc]
            doc_targets = document_targets(seq)
            ids += seq.token_ids
            targets += doc_targets
            positions += range(len(seq.token_ids))
            documents += [doc] * len(seq.token_ids)
            owners += [doc if t != IGNORE_INDEX else -1 for t in doc_targets]
        batches.append(
            MicroBatch(
                torch.tensor([ids], dtype=torch.int64),
                torch.tensor([targets], dtype=torch.int64),
                torch.tensor([positions], dtype=torch.int64),
                torch.tensor([documents], dtype=torch.int64),
                torch.tensor([owners], dtype=torch.int64),
                tuple(row),
            )
        )
    return batches


def rank_share(micro_batches: Sequence[MicroBatch], rank: int, world_size: int) -> list[MicroBatch]:
    """The micro-batches rank ``rank`` runs: every ``world_size``-th, starting at ``rank``."""
    return list(micro_batches[rank::world_size])


def count_targets(sequences: Sequence[LMSequence]) -> int:
    return sum(t != IGNORE_INDEX for seq in sequences for t in document_targets(seq))


def group_indices(samples: Sequence[RLSample]) -> list[int]:
    """Dense group number per sample, by first appearance of its ``prompt_id``."""
    groups: dict[str, int] = {}
    return [groups.setdefault(s.prompt_id, len(groups)) for s in samples]
