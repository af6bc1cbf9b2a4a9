"""The SFT loop behind ``k2rl train sft``: chat JSONL -> masked next-token loss, with resume.

Input is OpenAI chat format, one conversation per line: ``{"messages": [...], "tools":
[...]}`` with assistant ``tool_calls`` and ``tool`` results, exactly what ``k2rl synth``
writes to ``sft.jsonl``. Each conversation is rendered with the model tokenizer's chat
template (K2's for the presets: tool declarations and tool-call tokens), and only the
assistant turns are targets: the loss mask covers each assistant message's tokens, not the
headers, user turns or tool results. Training runs through the same engine path as
``loss_kind="sft"`` steps of the trainer service; progress and resume work as in
``pretrain.py`` (metrics.jsonl, checkpoints/step_N with the data cursor).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from k2rl.models.tokenizer import load_tokenizer
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.data import LMSequence
from k2rl.trainer.launch import JobSpec
from k2rl.trainer.pretrain import run_resumable, step_record


@dataclass(frozen=True)
class SFTOptions:
    model: str
    data: Path
    out: Path
    steps: int = 50
    batch_size: int = 4
    max_seq_len: int = 2048
    lr: float = 1e-3
    save_every: int = 10
    nproc: int = 1
    device: str = "auto"
    micro_batch_tokens: int = 2048
    seed: int = 0
    tokenizer: str | None = None  # preset name or directory with tokenizer.json; None = the model's

    def training_config(self) -> TrainingConfig:
        return TrainingConfig(lr=self.lr, micro_batch_tokens=self.micro_batch_tokens, seed=self.seed)


def chat_sequence(tokenizer: Any, messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]] | None,
                  *, max_seq_len: int, sequence_id: str = "") -> LMSequence | None:
    """Token ids of the rendered conversation with a mask over assistant turns; None if none fits.

    The template must render each prefix of the conversation as a prefix of the whole (true
    of K2's and of the common HF templates); a template that does not is rejected.
    """
    ids: list[int] = []
    mask: list[bool] = []
    rendered = ""

    def extend(text: str, target: bool) -> None:
        tokens = tokenizer.encode(text) if text else []
        ids.extend(tokens)
        mask.extend([target] * len(tokens))

    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            header = tokenizer.apply_chat_template(messages[:index], tools=tools, add_generation_prompt=True,
                                                   tokenize=False)
            extend(_suffix(rendered, header, index), False)
            rendered = header
        full = tokenizer.apply_chat_template(messages[: index + 1], tools=tools, tokenize=False)
        extend(_suffix(rendered, full, index), message["role"] == "assistant")
        rendered = full
    ids, mask = ids[:max_seq_len], mask[:max_seq_len]
    mask[0:1] = [False] * min(1, len(mask))  # token 0 has no predecessor
    if not any(mask):
        return None
    return LMSequence(tuple(ids), tuple(mask), sequence_id)


def _suffix(prefix: str, text: str, index: int) -> str:
    if not text.startswith(prefix):
        raise ValueError(f"the chat template does not render message {index} as a continuation of the ones "
                         "before it; SFT masking needs a prefix-stable template")
    return text[len(prefix):]


def load_chat_dataset(path: Path, tokenizer: Any, max_seq_len: int) -> list[LMSequence]:
    """Every conversation of a chat JSONL file; a line without assistant tokens in budget is skipped."""
    sequences = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = record["messages"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ValueError(f"{path}:{number}: expected a JSON object with 'messages' (OpenAI chat format)") from None
        sequence = chat_sequence(tokenizer, messages, record.get("tools") or None, max_seq_len=max_seq_len,
                                 sequence_id=f"{path.stem}-{number}")
        if sequence is not None:
            sequences.append(sequence)
    if not sequences:
        raise ValueError(f"{path} has no conversation with an assistant turn within {max_seq_len} tokens")
    return sequences


def _batch(sequences: list[LMSequence], cursor: int, size: int, seed: int) -> list[LMSequence]:
    """Conversations ``cursor .. cursor + size`` of the endless, epoch-shuffled dataset."""
    out = []
    for position in range(cursor, cursor + size):
        epoch, index = divmod(position, len(sequences))
        order = list(range(len(sequences)))
        random.Random(f"{seed}/{epoch}").shuffle(order)
        out.append(sequences[order[index]])
    return out


def sft(options: SFTOptions, on_step: Callable[[dict[str, Any]], None] = lambda record: None) -> int:
    """Run (or resume) SFT to ``options.steps``; returns the final step."""
    sequences = load_chat_dataset(options.data, load_tokenizer(options.tokenizer or options.model), options.max_seq_len)

    def step(job: Any, cursor: int) -> dict[str, Any]:
        return step_record(job.train_lm(_batch(sequences, cursor, options.batch_size, options.seed), loss_kind="sft"))

    spec = JobSpec(model=options.model, training=options.training_config(), device=options.device,
                   nproc=options.nproc)
    return run_resumable(spec, options.out, steps=options.steps, batch_size=options.batch_size,
                         save_every=options.save_every, step=step, on_step=on_step)
