"""A pretraining corpus from a local file: tokenised once, cut into fixed windows.

``.jsonl`` files hold one ``{"text": ...}`` document per line; any other file is plain
text with documents separated by blank lines. Every document becomes ``BOS text EOS``
(byte tokenizer of the presets); the token stream is cut into windows of ``seq_len``
tokens. The last ``eval_windows`` windows are held out for evaluation. Training order is
a fresh seeded permutation per epoch, so the position in the data is one integer, the
number of windows consumed (``cursor``), which a checkpoint stores for exact resumption.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from k2rl.models.tokenizer import ByteTokenizer
from k2rl.trainer.data import LMSequence


def read_documents(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return [json.loads(line)["text"] for line in text.splitlines() if line.strip()]
    return [doc.strip() for doc in text.split("\n\n") if doc.strip()]


class WindowCorpus:
    def __init__(self, path: Path, seq_len: int, *, eval_windows: int = 4, seed: int = 0) -> None:
        if seq_len < 2:
            raise ValueError("seq_len must be >= 2")
        tokenizer = ByteTokenizer()
        stream: list[int] = []
        for doc in read_documents(path):
            stream += tokenizer.encode(doc, add_special_tokens=True) + [tokenizer.eos_token_id]  # type: ignore[list-item]
        windows = [tuple(stream[i : i + seq_len]) for i in range(0, len(stream) - seq_len + 1, seq_len)]
        if len(windows) <= eval_windows:
            raise ValueError(f"{path} gives {len(windows)} windows of {seq_len} tokens; need more than "
                             f"{eval_windows} (the held-out ones)")
        self.train = windows[: len(windows) - eval_windows]
        self.eval = windows[len(windows) - eval_windows :]
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._orders[epoch] = torch.randperm(len(self.train), generator=generator).tolist()
        return self._orders[epoch]

    def batch(self, cursor: int, size: int) -> list[LMSequence]:
        """Windows ``cursor .. cursor + size`` of the endless epoch-shuffled stream."""
        out = []
        for position in range(cursor, cursor + size):
            epoch, index = divmod(position, len(self.train))
            out.append(LMSequence(self.train[self._order(epoch)[index]], None, f"window-{position}"))
        return out

    def eval_batch(self) -> list[LMSequence]:
        return [LMSequence(w, None, f"eval-{i}") for i, w in enumerate(self.eval)]
