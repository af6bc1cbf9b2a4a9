"""The instruction-following environment: generated tasks, options, datasets, the judge request.

The checkers themselves are the judge's; tests/test_rl_environments_judge.py scores these
tasks with the real judge service.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2rl.controller.environments import EnvironmentServices, build_environment
from k2rl.controller.environments.instruction import KINDS, InstructionOptions, InstructionTasks
from k2rl.judge.v1 import judge_pb2

CHECKERS_BY_KIND = {
    "words": {"length_constraints:number_words"},
    "keywords": {"keywords:existence"},
    "json": {"detectable_format:json_format"},
    "bullets": {"detectable_format:number_bullet_lists"},
    "case": {"change_case:english_lowercase", "change_case:english_capital"},
}


class RecordingJudge:
    """Answers Score with a fixed verdict and keeps the requests (a declared double)."""

    def __init__(self, reward: float, passed: bool) -> None:
        self.requests: list[judge_pb2.ScoreRequest] = []
        self.reward, self.passed = reward, passed

    def Score(self, request: judge_pb2.ScoreRequest, timeout: float) -> judge_pb2.ScoreResponse:  # noqa: N802
        self.requests.append(request)
        return judge_pb2.ScoreResponse(reward=self.reward, passed=self.passed, verifier="instruction")


def test_generated_tasks_are_deterministic_disjoint_and_well_formed() -> None:
    options = InstructionOptions(constraints=3, seed=7)
    train, held_out = InstructionTasks(options), InstructionTasks(options, held_out=True)
    assert train.task(11) == InstructionTasks(options).task(11)
    assert train.task(11).task_id != held_out.task(11).task_id
    seen_kinds: set[str] = set()
    for index in range(200):
        task = train.task(index)
        checkers = [c["checker"] for c in task.reference["constraints"]]
        assert 1 <= len(checkers) <= 3 and len(set(checkers)) == len(checkers)
        kinds = {kind for kind, names in CHECKERS_BY_KIND.items() if set(checkers) & names}
        assert len(kinds) == len(checkers), checkers  # one constraint per kind
        assert not {"json", "bullets"} <= kinds, "JSON output and a bullet list cannot both hold"
        for constraint in task.reference["constraints"]:
            assert constraint["description"] in task.prompt
        seen_kinds |= kinds
    assert seen_kinds == set(KINDS)


def test_options_select_kinds_and_reject_bad_values() -> None:
    only_case = InstructionTasks(InstructionOptions.from_options({"kinds": "case", "constraints": "1"}, 0))
    assert all(only_case.task(i).reference["constraints"][0]["checker"].startswith("change_case")
               for i in range(20))
    with pytest.raises(ValueError, match="kinds"):
        InstructionOptions.from_options({"kinds": "words,haiku"}, 0)
    with pytest.raises(ValueError, match="constraints"):
        InstructionOptions.from_options({"constraints": "4"}, 0)


def test_environment_sends_the_constraints_to_the_judge_and_returns_its_reward() -> None:
    judge = RecordingJudge(reward=0.5, passed=False)
    setup = build_environment("instruction_following", {"kinds": "words,keywords", "constraints": "2"}, "", 3,
                              EnvironmentServices(judge=judge))
    assert setup.held_out is not None
    task = setup.tasks.task(4)
    env = setup.new_episode()
    assert env.reset(task) == task.prompt
    result = env.step("a response")
    assert result.done and result.reward == 0.5 and not result.passed
    sent = judge.requests[0]
    assert sent.response == "a response"
    assert sent.task.kind == judge_pb2.TASK_KIND_INSTRUCTION_FOLLOWING and sent.task.task_id == task.task_id
    assert [(c.checker, json.loads(c.arguments_json)) for c in sent.task.instruction.constraints] == \
        [(c["checker"], c["arguments"]) for c in task.reference["constraints"]]


def test_dataset_rows_need_constraints_and_the_judge_is_required(tmp_path: Path) -> None:
    good = tmp_path / "if.jsonl"
    good.write_text(json.dumps({"prompt": "Say hi in lowercase.",
                                "constraints": [{"checker": "change_case:english_lowercase"}]}) + "\n")
    setup = build_environment("instruction_following", {}, str(good), 0, EnvironmentServices(judge=object()))
    assert setup.tasks.task(0).prompt == "Say hi in lowercase." and setup.held_out is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "Say hi."}) + "\n")
    with pytest.raises(ValueError, match="constraints"):
        build_environment("instruction_following", {}, str(bad), 0, EnvironmentServices(judge=object()))
    with pytest.raises(ValueError, match="judge"):
        build_environment("instruction_following", {}, "", 0, EnvironmentServices())
