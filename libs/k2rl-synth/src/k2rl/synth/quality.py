"""Quality filter: the judge service scores each trajectory against its task's rubric.

K2 report 3.1.1: "an LLM-based judge evaluates each trajectory against the task rubrics;
only trajectories that meet the success criteria are retained" (rejection sampling). One
``JudgeService.ScoreBatch`` call per trajectory carries:

- an AGENTIC item: the rubric's tool-call checkpoints and expected final state, checked
  deterministically by the judge against the conversation's tool calls and the tool
  simulator's final state;
- with ``llm_judge``, an INSTRUCTION_FOLLOWING item whose constraints are the rubric's
  success criteria with no checker, so the judge's critic model decides each one reading
  the whole conversation.

Local checks add what needs no judge: the episode ended on its own (not at the turn limit),
no malformed tool call, and for coding tasks the sandbox pass rate.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from k2rl.judge.v1 import judge_pb2
from k2rl.synth.tasks import SynthTask
from k2rl.synth.trajectories import Trajectory

_ROLES = {"system": judge_pb2.CONVERSATION_ROLE_SYSTEM, "user": judge_pb2.CONVERSATION_ROLE_USER,
          "assistant": judge_pb2.CONVERSATION_ROLE_ASSISTANT, "tool": judge_pb2.CONVERSATION_ROLE_TOOL}


@dataclass
class Judgement:
    trajectory_id: str
    task_id: str
    domain: str
    passed: bool
    reward: float
    checks: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def conversation_to_pb(messages: list[dict[str, Any]]) -> list[judge_pb2.ConversationMessage]:
    out = []
    for message in messages:
        calls = [judge_pb2.ToolCall(name=c["function"]["name"], arguments_json=str(c["function"]["arguments"]))
                 for c in message.get("tool_calls", [])]
        out.append(judge_pb2.ConversationMessage(role=_ROLES[message["role"]], content=str(message.get("content") or ""),
                                                 tool_name=message.get("name", "") if message["role"] == "tool" else "",
                                                 tool_calls=calls))
    return out


def transcript(messages: list[dict[str, Any]]) -> str:
    """The conversation as plain text, for the critic."""
    lines = []
    for message in messages[1:]:  # the agent's system prompt is not what is judged
        calls = "".join(f" [calls {c['function']['name']}({c['function']['arguments']})]"
                        for c in message.get("tool_calls", []))
        lines.append(f"{message['role']}: {message.get('content') or ''}{calls}")
    return "\n".join(lines)


def agentic_item(task: SynthTask, trajectory: Trajectory) -> judge_pb2.ScoreRequest:
    rubric = task.rubric
    reference = judge_pb2.RubricReference(
        tool_checkpoints=[judge_pb2.ToolCallCheckpoint(tool_name=c.tool_name,
                                                       arguments_subset_json=json.dumps(c.arguments_subset),
                                                       ordered=c.ordered, forbidden=c.forbidden)
                          for c in rubric.checkpoints],
        expected_final_state={k: json.dumps(v) for k, v in rubric.expected_final_state.items()})
    return judge_pb2.ScoreRequest(
        task=judge_pb2.TaskSpec(kind=judge_pb2.TASK_KIND_AGENTIC, task_id=task.task_id, prompt=task.instruction,
                                rubric=reference),
        response=trajectory.final_response(), conversation=conversation_to_pb(trajectory.messages),
        final_state={k: json.dumps(v) for k, v in trajectory.final_state.items()})


def criteria_item(task: SynthTask, trajectory: Trajectory) -> judge_pb2.ScoreRequest:
    constraints = [judge_pb2.InstructionConstraint(description=criterion)
                   for criterion in task.rubric.success_criteria]
    prompt = f"Task: {task.instruction}\n\nConversation:\n{transcript(trajectory.messages)}"
    return judge_pb2.ScoreRequest(
        task=judge_pb2.TaskSpec(kind=judge_pb2.TASK_KIND_INSTRUCTION_FOLLOWING, task_id=task.task_id, prompt=prompt,
                                instruction=judge_pb2.InstructionReference(constraints=constraints)),
        response=trajectory.final_response(), skip_hack_check=True)


def local_checks(task: SynthTask, trajectory: Trajectory, min_code_pass_rate: float) -> list[dict[str, Any]]:
    checks = [
        {"name": "episode ended on its own", "passed": trajectory.finished, "score": float(trajectory.finished),
         "detail": "" if trajectory.finished else "hit the turn limit"},
        {"name": "no malformed tool calls", "passed": trajectory.malformed_calls == 0,
         "score": float(trajectory.malformed_calls == 0), "detail": f"{trajectory.malformed_calls} malformed"},
    ]
    if task.kind == "coding":
        execution = trajectory.execution or {"pass_rate": 0.0, "status": "not run"}
        rate = float(execution["pass_rate"])
        checks.append({"name": "sandbox tests", "passed": rate >= min_code_pass_rate, "score": rate,
                       "detail": f"{execution.get('passed', 0)}/{execution.get('total', 0)} passed "
                                 f"({execution['status']})"})
    return checks


class QualityFilter:
    """Judges trajectories through the judge service's ScoreBatch (a sync stub, run off the loop)."""

    def __init__(self, judge: Any, *, llm_judge: bool = True, timeout_s: float = 120.0,
                 min_code_pass_rate: float = 1.0) -> None:
        self._judge = judge
        self.llm_judge = llm_judge
        self._timeout_s = timeout_s
        self._min_code_pass_rate = min_code_pass_rate

    async def judge(self, task: SynthTask, trajectory: Trajectory) -> Judgement:
        checks = local_checks(task, trajectory, self._min_code_pass_rate)
        items = []
        if task.kind == "tool_use":
            items.append(agentic_item(task, trajectory))
        if self.llm_judge:
            items.append(criteria_item(task, trajectory))
        error = ""
        if items:
            reply = await asyncio.to_thread(self._judge.ScoreBatch, judge_pb2.ScoreBatchRequest(requests=items),
                                            timeout=self._timeout_s)
            for response in reply.responses:
                if response.HasField("error") and response.error.code:
                    error = f"{response.error.code}: {response.error.message}"
                checks += [{"name": f"{response.verifier}: {c.name}", "passed": c.passed, "score": c.score,
                            "detail": c.detail} for c in response.checks]
                checks.append({"name": response.verifier or "judge", "passed": response.passed and not error,
                               "score": response.reward, "detail": error})
        passed = not error and all(check["passed"] for check in checks)
        reward = sum(check["score"] for check in checks) / len(checks)
        return Judgement(trajectory.trajectory_id, task.task_id, task.domain, passed, reward, checks, error)


def pass_rates(judgements: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per domain: trajectories judged, passed, and the pass rate."""
    table: dict[str, dict[str, float]] = {}
    for judgement in judgements:
        row = table.setdefault(judgement["domain"], {"judged": 0, "passed": 0, "pass_rate": 0.0})
        row["judged"] += 1
        row["passed"] += int(judgement["passed"])
    for row in table.values():
        row["pass_rate"] = row["passed"] / row["judged"]
    return dict(sorted(table.items()))
