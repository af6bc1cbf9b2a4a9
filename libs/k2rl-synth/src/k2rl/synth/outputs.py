"""What the pipeline produces: SFT data and an RL environment.

- ``sft.jsonl``: one kept trajectory per line in OpenAI chat format,
  ``{"messages": [...], "tools": [...], "metadata": {...}}``, assistant tool calls as
  ``tool_calls`` with K2-style ids (``functions.{name}:{n}``) and results as ``tool``
  messages. ``k2rl train sft --data sft.jsonl`` reads it as is.
- ``sft_k2.jsonl``: the same conversations rendered with a tokenizer's chat template
  (K2's by default: tool declarations, ``<|tool_calls_section_begin|>`` ... tokens), one
  ``{"text": ...}`` per line, for inspection and for trainers that take raw text.
- ``rl_environment.jsonl``: every validated task with its rubric, agent (system prompt and
  tool schemas) and tool-simulator settings; the controller's ``tool_use`` environment uses
  it as its dataset.

Files are written whole and renamed into place, so a crash never leaves a half file and a
rerun rewrites them from the state store without duplicates.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from k2rl.models.chat import K2_CHAT_TEMPLATE, render_chat
from k2rl.synth.agents import AgentSpec
from k2rl.synth.simulators import OutcomeWeights
from k2rl.synth.tasks import SynthTask

SFT_FILE = "sft.jsonl"
SFT_K2_FILE = "sft_k2.jsonl"
RL_ENV_FILE = "rl_environment.jsonl"


def sft_record(trajectory: dict[str, Any], judgement: dict[str, Any]) -> dict[str, Any]:
    messages = []
    for message in trajectory["messages"]:
        clean = {"role": message["role"], "content": message.get("content") or ""}
        if message.get("tool_calls"):
            clean["tool_calls"] = message["tool_calls"]
        if message["role"] == "tool":
            clean["tool_call_id"] = message["tool_call_id"]
        messages.append(clean)
    metadata = {key: trajectory[key] for key in ("trajectory_id", "task_id", "agent_id", "domain", "kind")}
    metadata["reward"] = judgement["reward"]
    return {"messages": messages, "tools": trajectory["tools"], "metadata": metadata}


def render_k2(record: dict[str, Any], template: str = K2_CHAT_TEMPLATE) -> str:
    """The conversation as the model sees it in training, K2 tool-call tokens included."""
    return render_chat(template, record["messages"], tools=record["tools"] or None)


def rl_environment_record(task: SynthTask, agent: AgentSpec, weights: OutcomeWeights) -> dict[str, Any]:
    return {"id": task.task_id, "prompt": task.instruction, "task": task.to_dict(), "agent": agent.to_dict(),
            "simulator": {"outcome_weights": {"success": weights.success,
                                              "partial_failure": weights.partial_failure,
                                              "edge_case": weights.edge_case}}}


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write ``rows`` to ``path`` atomically; returns the number of rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    count = 0
    with tmp.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return count


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
