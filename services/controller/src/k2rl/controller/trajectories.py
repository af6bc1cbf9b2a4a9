"""Prompt groups and their samples: the unit the partial-rollout buffer stores.

A *group* is one prompt with its K samples (K1.5 needs all K in one train step for the
group-mean baseline). Each sample is pending (no tokens yet), paused (partial rollout:
tokens, logprobs and environment state saved, to be resumed), or finished (scored).
Groups stay in the buffer until every sample is finished and the group is trained, so a
finished sample whose siblings are still paused is never lost nor trained twice.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

from k2rl.common.v1 import common_pb2


class SampleStatus(enum.StrEnum):
    PENDING = "pending"
    PAUSED = "paused"
    FINISHED = "finished"


class SpanRole(enum.StrEnum):
    MODEL = "model"
    TOOL = "tool"


_ROLES = {SpanRole.MODEL: common_pb2.TURN_ROLE_MODEL, SpanRole.TOOL: common_pb2.TURN_ROLE_TOOL}
_FINISH = {"stop": common_pb2.FINISH_REASON_STOP, "length": common_pb2.FINISH_REASON_LENGTH}


@dataclass
class TokenSpan:
    """Output tokens [start, end) produced by ``role``; MODEL spans record the weight version."""

    role: SpanRole
    start: int
    end: int
    weight_version: int = 0


@dataclass
class Sample:
    """One trajectory of a group, in whatever state it is."""

    sample_index: int
    token_budget: int
    status: SampleStatus = SampleStatus.PENDING
    output_token_ids: list[int] = field(default_factory=list)
    output_logprobs: list[float] = field(default_factory=list)
    spans: list[TokenSpan] = field(default_factory=list)
    finish_reason: str = ""  # "stop" | "length" once finished
    reward: float | None = None
    passed: bool = False
    verifier: str = ""  # what scored it (StepResult.info["verifier"]), e.g. "exact_integer"
    resume_count: int = 0
    env_state: dict[str, Any] = field(default_factory=dict)

    def add_tokens(self, role: SpanRole, token_ids: list[int], logprobs: list[float], version: int) -> None:
        """Append tokens, extending the last span when role and weight version match."""
        if not token_ids:
            return
        start = len(self.output_token_ids)
        self.output_token_ids.extend(token_ids)
        self.output_logprobs.extend(logprobs if role is SpanRole.MODEL else [0.0] * len(token_ids))
        last = self.spans[-1] if self.spans else None
        if last is not None and last.role is role and last.weight_version == version and last.end == start:
            last.end = len(self.output_token_ids)
        else:
            self.spans.append(TokenSpan(role, start, len(self.output_token_ids), version))

    @property
    def model_tokens(self) -> int:
        return sum(s.end - s.start for s in self.spans if s.role is SpanRole.MODEL)

    @property
    def oldest_version(self) -> int | None:
        versions = [s.weight_version for s in self.spans if s.role is SpanRole.MODEL]
        return min(versions) if versions else None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["spans"] = [[s.role.value, s.start, s.end, s.weight_version] for s in self.spans]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        data = dict(data)
        data["status"] = SampleStatus(data["status"])
        data["spans"] = [TokenSpan(SpanRole(r), s, e, v) for r, s, e, v in data["spans"]]
        return cls(**data)


@dataclass
class PromptGroup:
    """One prompt and its K samples."""

    group_id: str
    environment: str
    task: dict[str, Any]
    prompt_token_ids: list[int]
    samples: list[Sample]
    start_iteration: int

    @property
    def complete(self) -> bool:
        return all(s.status is SampleStatus.FINISHED for s in self.samples)

    def trajectory_id(self, sample: Sample) -> str:
        return f"{self.group_id}/{sample.sample_index}"

    def to_json(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "environment": self.environment, "task": self.task,
                "prompt_token_ids": self.prompt_token_ids, "start_iteration": self.start_iteration,
                "samples": [s.to_json() for s in self.samples]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PromptGroup:
        return cls(data["group_id"], data["environment"], data["task"], list(data["prompt_token_ids"]),
                   [Sample.from_json(s) for s in data["samples"]], int(data["start_iteration"]))

    def to_trajectories(self) -> list[common_pb2.Trajectory]:
        """Finished samples as the contract's Trajectory messages (what TrainStep takes)."""
        out = []
        for sample in self.samples:
            trajectory = common_pb2.Trajectory(
                trajectory_id=self.trajectory_id(sample), prompt_id=self.group_id,
                sample_index=sample.sample_index, environment=self.environment,
                prompt_token_ids=self.prompt_token_ids, output_token_ids=sample.output_token_ids,
                output_logprobs=sample.output_logprobs,
                turns=[common_pb2.Turn(role=_ROLES[s.role], output_token_start=s.start, output_token_end=s.end,
                                       weight_version=s.weight_version) for s in sample.spans],
                finish_reason=_FINISH.get(sample.finish_reason, common_pb2.FINISH_REASON_UNSPECIFIED),
                token_budget=sample.token_budget, start_iteration=self.start_iteration,
                resume_count=sample.resume_count, metadata={"passed": str(sample.passed).lower()},
            )
            if sample.reward is not None:
                trajectory.reward = sample.reward
            out.append(trajectory)
        return out
