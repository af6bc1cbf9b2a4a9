"""The controller's instruction-following tasks scored by the real judge service (in process,
over gRPC on loopback): every generated constraint is one the judge's checkers accept, a
response written to satisfy a task's constraints passes, and rewards are deterministic."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from k2rl.controller.environments import EnvironmentServices, build_environment
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import serve_in_process
from k2rl.judge.service import SERVICE as JUDGE
from k2rl.judge.v1 import judge_pb2_grpc

FILLER = ("stone", "river", "light", "cloud", "field", "music", "paper", "bridge")


@pytest.fixture(scope="module")
def judge() -> Iterator[judge_pb2_grpc.JudgeServiceStub]:
    with serve_in_process(JUDGE, math_workers=1) as runtime:
        stub = create_stub(judge_pb2_grpc.JudgeServiceStub, runtime.settings.address, ClientOptions())
        try:
            yield stub
        finally:
            close_stub(stub)


def satisfying_response(constraints: list[dict]) -> str:
    """A response written to meet every constraint of a generated task."""
    by_checker = {c["checker"]: c["arguments"] for c in constraints}
    words = list(by_checker.get("keywords:existence", {}).get("keywords", []))
    is_json = "detectable_format:json_format" in by_checker
    count = by_checker.get("length_constraints:number_words")
    bullets = by_checker.get("detectable_format:number_bullet_lists", {}).get("num_bullets", 0)
    target = max(3, len(words), bullets)
    if count is not None:  # a JSON object's key is one word too
        target = count["num_words"] + 1 if count["relation"] == "at least" else count["num_words"] - int(is_json)
    words += [FILLER[i % len(FILLER)] for i in range(max(0, target - len(words)))]
    if bullets:
        lines = [words[i::bullets] for i in range(bullets)]
        text = "\n".join("* " + " ".join(line) for line in lines)
    elif is_json:
        text = json.dumps({"text": " ".join(words)})
    else:
        text = " ".join(words)
    return text.upper() if "change_case:english_capital" in by_checker else text.lower()


def test_generated_tasks_are_scored_by_the_judges_checkers(judge: judge_pb2_grpc.JudgeServiceStub) -> None:
    setup = build_environment("instruction_following", {"constraints": "3"}, "", 5, EnvironmentServices(judge=judge))
    partial = 0
    for index in range(40):
        task = setup.tasks.task(index)
        env = setup.new_episode()
        env.reset(task)
        result = env.step(satisfying_response(task.reference["constraints"]))
        assert "error" not in result.info, result.info
        assert result.passed and result.reward == 1.0, (task.prompt, result.info)

        rerun = [setup.new_episode() for _ in range(2)]
        rewards = []
        for episode in rerun:
            episode.reset(task)
            rewards.append(episode.step("Hello, World. This is it").reward)
        assert rewards[0] == rewards[1] and 0.0 <= rewards[0] <= 1.0
        partial += rewards[0] < 1.0
    assert partial > 0, "an unconstrained reply must miss some constraints"
