"""Continuous batching: which sequences run in the next forward.

Every step is either a *prefill* step (admit waiting sequences: compute their uncached
prompt tokens and sample their first token) or a *decode* step (one new token for every
running sequence). Prefill goes first whenever something can be admitted, so new requests
join the running batch at the next step instead of waiting for the batch to drain
(Orca-style iteration-level scheduling, as in vLLM / nano-vllm).

Order is by priority (higher first), then arrival. When a decode step needs a KV block and
none is free, the lowest-priority, most recent running sequence is preempted: its blocks
are freed and it goes back to the waiting queue, to be recomputed from its tokens later
(its full blocks usually survive in the prefix cache, so recomputation is cheap).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from k2rl.inference.block_manager import BlockManager
from k2rl.inference.sequence import FinishReason, Sequence, SequenceStatus


def _order(seq: Sequence) -> tuple[int, int]:
    return (-seq.priority, seq.seq_id)


@dataclass
class ScheduledBatch:
    is_prefill: bool
    sequences: list[Sequence]
    # Sequences the scheduler had to end (a lone sequence that outgrew the whole cache).
    finished: list[Sequence] = field(default_factory=list)


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_running: int, max_batched_tokens: int) -> None:
        self.block_manager = block_manager
        self.max_running = max_running
        self.max_batched_tokens = max_batched_tokens
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        # n > 1: later samples wait until the first sample's prompt is cached, so the prompt
        # is prefilled once and the others hit the prefix cache.
        self.waits_for: dict[Sequence, Sequence] = {}

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence, waits_for: Sequence | None = None) -> None:
        seq.status = SequenceStatus.WAITING
        if waits_for is not None:
            self.waits_for[seq] = waits_for
        bisect.insort(self.waiting, seq, key=_order)

    # --- scheduling -----------------------------------------------------------------

    def schedule(self) -> ScheduledBatch | None:
        prefill = self._schedule_prefill()
        if prefill is not None:
            return prefill
        return self._schedule_decode() if self.running else None

    def _blocked(self, seq: Sequence) -> bool:
        first = self.waits_for.get(seq)
        if first is None:
            return False
        if first.prefilled_once or first.is_finished:
            del self.waits_for[seq]
            return False
        return True

    def _schedule_prefill(self) -> ScheduledBatch | None:
        batch: list[Sequence] = []
        longest = 0
        for seq in list(self.waiting):
            if len(self.running) + len(batch) >= self.max_running:
                break
            if self._blocked(seq):
                continue
            allocation = self.block_manager.allocate(seq.token_ids)
            if allocation is None:
                break  # strict order: a large request is not starved by smaller ones behind it
            table, cached = allocation
            new_tokens = seq.num_tokens - cached
            # Rows are padded to the longest, so the padded size is what a step costs.
            if batch and (len(batch) + 1) * max(longest, new_tokens) > self.max_batched_tokens:
                self.block_manager.free(table)
                break
            seq.block_table, seq.num_computed_tokens = table, cached
            seq.block_hashes = []
            if not seq.prefilled_once:
                seq.cached_prompt_tokens = cached
            longest = max(longest, new_tokens)
            batch.append(seq)
        if not batch:
            return None
        for seq in batch:
            self.waiting.remove(seq)
            seq.status = SequenceStatus.RUNNING
            bisect.insort(self.running, seq, key=_order)
        return ScheduledBatch(True, batch)

    def _schedule_decode(self) -> ScheduledBatch:
        finished: list[Sequence] = []
        scheduled: list[Sequence] = []
        for seq in list(self.running):
            if seq.status is not SequenceStatus.RUNNING:
                continue  # preempted below while making room for an earlier sequence
            while not self.block_manager.grow(seq.block_table, seq.num_tokens):
                victim = self.running[-1]
                if victim is seq and len(self.running) == 1:
                    # Nothing left to preempt: the sequence fills the whole cache.
                    self.finish(seq, FinishReason.LENGTH)
                    finished.append(seq)
                    break
                self.preempt(victim)
                if victim is seq:
                    break
            if seq.status is SequenceStatus.RUNNING:
                scheduled.append(seq)
        return ScheduledBatch(False, scheduled, finished)

    # --- state changes --------------------------------------------------------------

    def preempt(self, seq: Sequence) -> None:
        """Back to waiting; its KV is recomputed from its tokens when it is scheduled again."""
        self.running.remove(seq)
        self.block_manager.free(seq.block_table)
        seq.num_computed_tokens = 0
        seq.block_hashes = []
        self.add(seq)

    def preempt_all(self) -> None:
        for seq in list(self.running):
            self.preempt(seq)

    def finish(self, seq: Sequence, reason: FinishReason) -> None:
        """Mark ``seq`` finished and release its blocks, wherever it is."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting.remove(seq)
            self.waits_for.pop(seq, None)
        self.block_manager.free(seq.block_table)
        seq.status = SequenceStatus.FINISHED
        seq.finish_reason = reason
