"""``k2rl train sft``: chat JSONL (the format ``k2rl synth`` writes) -> assistant-masked SFT steps."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from k2rl.models.tokenizer import load_tokenizer
from k2rl.trainer.sft import chat_sequence, load_chat_dataset

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather at a place.",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
# One line of k2rl synth's sft.jsonl: OpenAI chat format, K2-style call ids, a tool result.
CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You are Ada."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "functions.get_weather:0", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "8C, cloudy"},
        {"role": "assistant", "content": "It is 8C and cloudy in Oslo."},
    ],
    "tools": TOOLS,
    "metadata": {"trajectory_id": "agent-00000-t000/a0"},
}


def test_only_assistant_turns_are_targets() -> None:
    tokenizer = load_tokenizer("k2-nano")
    sequence = chat_sequence(tokenizer, CONVERSATION["messages"], TOOLS, max_seq_len=4096)
    assert sequence is not None
    whole = tokenizer.apply_chat_template(CONVERSATION["messages"], tools=TOOLS, tokenize=False)
    assert tokenizer.decode(list(sequence.token_ids)) == whole
    targets = tokenizer.decode([t for t, m in zip(sequence.token_ids, sequence.loss_mask, strict=True) if m])
    assert targets == ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
                       "<|tool_call_argument_begin|>{\"city\": \"Oslo\"}<|tool_call_end|><|tool_calls_section_end|>"
                       "<|im_end|>It is 8C and cloudy in Oslo.<|im_end|>")


def test_truncation_and_conversations_without_targets() -> None:
    tokenizer = load_tokenizer("k2-nano")
    assert chat_sequence(tokenizer, CONVERSATION["messages"], TOOLS, max_seq_len=20) is None
    assert chat_sequence(tokenizer, CONVERSATION["messages"][:2], None, max_seq_len=4096) is None


def test_bad_lines_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(CONVERSATION) + "\n{\"text\": \"no messages\"}\n")
    with pytest.raises(ValueError, match="bad.jsonl:2: expected a JSON object with 'messages'"):
        load_chat_dataset(path, load_tokenizer("k2-nano"), 4096)


@pytest.mark.slow
def test_k2rl_train_sft_consumes_synth_output(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = tmp_path / "sft.jsonl"
    data.write_text("\n".join(json.dumps(CONVERSATION) for _ in range(3)) + "\n")
    out = tmp_path / "run"
    command = [sys.executable, "-c", "from k2rl.core.cli import main; main()", "train", "sft", "--data", str(data),
               "--preset", str(tiny_checkpoint), "--tokenizer", "k2-nano", "--out", str(out), "--steps", "2",
               "--batch-size", "2", "--save-every", "2", "--device", "cpu", "--micro-batch-tokens", "512"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in records)
    assert (out / "checkpoints" / "step_2").is_dir()
