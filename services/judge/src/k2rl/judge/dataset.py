"""Critic-refinement data (K2 §3.2.2, closed-loop critic refinement): on-policy samples of
verifiable prompts, paired by their verifiable outcomes, written as JSONL preference pairs
the trainer can fine-tune the critic on (one object per line: prompt, chosen, rejected and
their rewards)."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from k2rl.core.errors import InvalidArgument

_DATASET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Sample:
    response: str
    reward: float
    verifier: str = ""


def preference_pairs(samples: Sequence[Sample], min_margin: float) -> list[tuple[Sample, Sample]]:
    """(chosen, rejected) for every pair whose rewards differ by at least ``min_margin``."""
    pairs = []
    for i, first in enumerate(samples):
        for second in samples[i + 1:]:
            if abs(first.reward - second.reward) >= min_margin and first.response != second.response:
                pairs.append((first, second) if first.reward > second.reward else (second, first))
    return pairs


class CriticDataWriter:
    """Appends preference pairs to ``<directory>/<dataset>.jsonl``; thread-safe."""

    def __init__(self, directory: Path, min_margin: float = 0.5, max_pairs_per_prompt: int = 16) -> None:
        self.directory = directory
        self.min_margin = min_margin
        self.max_pairs_per_prompt = max_pairs_per_prompt
        self._lock = threading.Lock()

    def path(self, dataset: str) -> Path:
        if not _DATASET_NAME.match(dataset):
            raise InvalidArgument(f"dataset name {dataset!r} must match {_DATASET_NAME.pattern}", field="dataset")
        return self.directory / f"{dataset}.jsonl"

    def write(self, dataset: str, prompt_id: str, prompt: str, samples: Sequence[Sample],
              min_margin: float | None = None) -> int:
        """Append the prompt's preference pairs; returns how many were written."""
        target = self.path(dataset)
        margin = self.min_margin if min_margin is None else min_margin
        pairs = preference_pairs(samples, margin)[: self.max_pairs_per_prompt]
        if not pairs:
            return 0
        lines = [json.dumps({
            "prompt_id": prompt_id, "prompt": prompt, "chosen": chosen.response, "rejected": rejected.response,
            "chosen_reward": chosen.reward, "rejected_reward": rejected.reward,
            "verifier": chosen.verifier or rejected.verifier, "source": "verifiable_reward",
        }, ensure_ascii=False) for chosen, rejected in pairs]
        with self._lock:
            self.directory.mkdir(parents=True, exist_ok=True)
            with target.open("a", encoding="utf-8") as handle:
                handle.write("\n".join(lines) + "\n")
        return len(pairs)
