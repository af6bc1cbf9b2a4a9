"""The judge over gRPC, in-process: every RPC, batching, errors, metrics, critic data.
Dependencies are test doubles: the sandbox contract served in-process and a scripted
OpenAI-compatible critic."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.server import ServiceRuntime
from k2rl.core.testing import assert_serves_contract, serve_in_process
from k2rl.judge.service import SERVICE
from k2rl.judge.testing import sandbox_double, scripted_critic, shown_responses, verdict_json
from k2rl.judge.v1 import judge_pb2 as pb
from k2rl.judge.v1 import judge_pb2_grpc
from k2rl.sandbox.v1 import sandbox_pb2


@contextmanager
def judge(**overrides: object) -> Iterator[tuple[judge_pb2_grpc.JudgeServiceStub, ServiceRuntime]]:
    with serve_in_process(SERVICE, **overrides) as runtime:
        stub = create_stub(judge_pb2_grpc.JudgeServiceStub, runtime.settings.address, ClientOptions(max_attempts=1))
        try:
            yield stub, runtime
        finally:
            close_stub(stub)


def math_item(answer: str, response: str, task_id: str = "", prompt: str = "") -> pb.ScoreRequest:
    return pb.ScoreRequest(task=pb.TaskSpec(kind=pb.TASK_KIND_MATH, task_id=task_id, prompt=prompt,
                                            math=pb.MathReference(answer=answer)), response=response)


def metric(runtime: ServiceRuntime, name: str, **labels: str) -> float:
    return runtime.metrics.registry.get_sample_value(name, labels) or 0.0


def test_serves_health_and_reflection_for_its_contract() -> None:
    with serve_in_process(SERVICE, auth_token="t") as runtime:
        assert_serves_contract(runtime, "k2rl.judge.v1.JudgeService")


def test_score_batch_scores_every_kind_in_order_with_checks_and_metrics() -> None:
    puzzle = pb.PuzzleReference(game24=pb.Game24Puzzle(numbers=[4, 7, 8, 8]))
    instruction = pb.InstructionReference(constraints=[
        pb.InstructionConstraint(checker="length_constraints:number_words",
                                 arguments_json='{"relation": "less than", "num_words": 5}'),
        pb.InstructionConstraint(checker="change_case:english_lowercase"),
    ])
    agentic = pb.RubricReference(tool_checkpoints=[pb.ToolCallCheckpoint(tool_name="search",
                                                                         arguments_subset_json='{"q": "k2"}')])
    items = [
        math_item("1/2", r"\boxed{0.5}"),
        math_item("1/2", r"\boxed{0.51}"),
        pb.ScoreRequest(task=pb.TaskSpec(kind=pb.TASK_KIND_LOGIC_PUZZLE, puzzle=puzzle), response="(7-8/8)*4"),
        pb.ScoreRequest(task=pb.TaskSpec(kind=pb.TASK_KIND_INSTRUCTION_FOLLOWING, instruction=instruction),
                        response="Way Too Many Words here, I have followed all the constraints."),
        pb.ScoreRequest(task=pb.TaskSpec(kind=pb.TASK_KIND_EXACT_MATCH,
                                         exact_match=pb.ExactMatchReference(accepted_answers=["C"])),
                        response="Answer: (c)"),
        pb.ScoreRequest(task=pb.TaskSpec(kind=pb.TASK_KIND_AGENTIC, rubric=agentic), response="done",
                        conversation=[pb.ConversationMessage(role=pb.CONVERSATION_ROLE_ASSISTANT, tool_calls=[
                            pb.ToolCall(name="search", arguments_json='{"q": "k2", "n": 3}')])]),
    ]
    with judge() as (stub, runtime):
        reply = stub.ScoreBatch(pb.ScoreBatchRequest(requests=items), timeout=60)
        assert [r.passed for r in reply.responses] == [True, False, True, False, True, True]
        assert [r.verifier for r in reply.responses] == [
            "math_equivalence/1", "math_equivalence/1", "puzzle_game24/1", "instruction_following/1",
            "exact_match/1", "tool_use_checkpoints/1"]
        hacked = reply.responses[3]
        assert [f.kind for f in hacked.hack_findings] == ["false_compliance_claim"] and hacked.reward == 0.0
        assert all(r.latency_ms > 0 and not r.HasField("error") for r in reply.responses)
        assert metric(runtime, "k2rl_judge_verdicts_total", verifier="math_equivalence/1", outcome="passed") == 1
        assert metric(runtime, "k2rl_judge_verdicts_total", verifier="instruction_following/1",
                      outcome="hacked") == 1
        assert metric(runtime, "k2rl_judge_verifier_seconds_count", verifier="puzzle_game24/1") == 1


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ScoreBatchRequest(requests=[math_item("1", "1"), pb.ScoreRequest(task=pb.TaskSpec(
        kind=pb.TASK_KIND_MATH, code=pb.CodeReference()))]), "requests[1].task.math"),
    (pb.ScoreBatchRequest(requests=[math_item("", "1")]), "requests[0].task.math.answer"),
    (pb.ScoreBatchRequest(requests=[pb.ScoreRequest()]), "requests[0].task"),
    (pb.ScoreBatchRequest(requests=[pb.ScoreRequest(task=pb.TaskSpec(
        kind=pb.TASK_KIND_INSTRUCTION_FOLLOWING, instruction=pb.InstructionReference(constraints=[
            pb.InstructionConstraint(checker="length_constraints:number_words", arguments_json="{}")])))]),
     "requests[0].task.instruction.constraints[0].arguments_json"),
    (pb.ScoreBatchRequest(requests=[pb.ScoreRequest(task=pb.TaskSpec(
        kind=pb.TASK_KIND_LOGIC_PUZZLE, puzzle=pb.PuzzleReference(sudoku=pb.SudokuPuzzle(grid="12"))))]),
     "requests[0].task.puzzle.sudoku.grid"),
])
def test_malformed_items_fail_the_call_naming_the_field_and_the_service_keeps_serving(
        request_: pb.ScoreBatchRequest, field: str) -> None:
    with judge() as (stub, _):
        with pytest.raises(grpc.RpcError) as error:
            stub.ScoreBatch(request_, timeout=30)
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(field + ":"), error.value.details()
        assert stub.Score(math_item("2", r"\boxed{2}"), timeout=30).passed


def test_oversized_batch_is_resource_exhausted() -> None:
    with judge(max_batch_size=2) as (stub, _):
        with pytest.raises(grpc.RpcError) as error:
            stub.ScoreBatch(pb.ScoreBatchRequest(requests=[math_item("1", "1")] * 3), timeout=30)
        assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED


def test_code_items_go_through_the_sandbox_contract_and_a_dead_sandbox_is_a_per_item_error() -> None:
    tests = [sandbox_pb2.TestCase(name="double", stdin=b"21\n", expected_stdout=b"42\n")]
    code_task = pb.TaskSpec(kind=pb.TASK_KIND_CODE, code=pb.CodeReference(language=sandbox_pb2.LANGUAGE_PYTHON,
                                                                          tests=tests))
    batch = pb.ScoreBatchRequest(requests=[
        pb.ScoreRequest(task=code_task, response="```python\nprint(int(input()) * 2)\n```"),
        math_item("3", r"\boxed{3}"),
    ])
    with sandbox_double() as (double, address):
        with judge(dependencies={"sandbox": address}) as (stub, _):
            good = stub.ScoreBatch(batch, timeout=60)
            double.fail_with = grpc.StatusCode.UNAVAILABLE
            degraded = stub.ScoreBatch(batch, timeout=60)
    assert [r.passed for r in good.responses] == [True, True]
    assert degraded.responses[0].error.code == "SANDBOX_UNAVAILABLE" and degraded.responses[0].error.retryable
    assert degraded.responses[1].passed  # the rest of the batch is still scored


def test_compare_without_a_critic_is_failed_precondition() -> None:
    with judge() as (stub, _):
        with pytest.raises(grpc.RpcError) as error:
            stub.Compare(pb.CompareRequest(prompt="q", response_a="a", response_b="b"), timeout=30)
    assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "K2RL_CRITIC_BASE_URL" in error.value.details()


def test_compare_with_position_swap_reports_flips_as_ties_and_exports_the_flip_rate() -> None:
    def biased_unless_obvious(messages: list[dict[str, str]]) -> str:
        a, b = shown_responses(messages)
        if "correct" in (a + b):  # an obvious case the critic gets right in both orders
            return verdict_json("A" if "correct" in a else "B")
        return verdict_json("A")  # otherwise it always prefers the first position

    with scripted_critic(biased_unless_obvious) as critic:
        with judge(critic_base_url=critic.base_url, critic_model="scripted") as (stub, runtime):
            clear = stub.Compare(pb.CompareRequest(prompt="q", response_a="a", response_b="the correct one",
                                                   position_swap=True), timeout=30)
            flip = stub.Compare(pb.CompareRequest(prompt="q", response_a="x", response_b="y",
                                                  position_swap=True), timeout=30)
            assert metric(runtime, "k2rl_judge_position_flip_rate") == 0.5
            assert metric(runtime, "k2rl_judge_comparisons_total", outcome="flipped") == 1
    assert (clear.preference, clear.position_consistent, clear.critic) == (pb.PREFERENCE_RESPONSE_B, True, "scripted")
    assert {v.rubric_name for v in clear.verdicts} == {
        "clarity_and_relevance", "conversational_fluency_and_engagement", "objective_and_grounded_interaction",
        "no_initial_praise", "no_explicit_justification"}
    assert (flip.preference, flip.probability_a_better, flip.position_consistent) == (pb.PREFERENCE_TIE, 0.5, False)


def test_rubric_samples_of_one_prompt_are_ranked_together() -> None:
    """Also with one critic thread: pairs waiting on their critic calls must not starve them."""
    quality = {"best answer": 3, "ok answer": 2, "Great question! weak answer": 1}

    def by_quality(messages: list[dict[str, str]]) -> str:
        a, b = shown_responses(messages)
        return verdict_json("A" if quality[a] > quality[b] else "B")

    rubric_task = pb.TaskSpec(kind=pb.TASK_KIND_RUBRIC, task_id="p1", prompt="Explain X.", rubric=pb.RubricReference())
    batch = pb.ScoreBatchRequest(requests=[pb.ScoreRequest(task=rubric_task, response=r) for r in quality]
                                 + [math_item("1", r"\boxed{1}")])
    with scripted_critic(by_quality) as critic:
        with judge(critic_base_url=critic.base_url, critic_concurrency=1) as (stub, _):
            reply = stub.ScoreBatch(batch, timeout=60)
    rewards = [r.reward for r in reply.responses[:3]]
    assert rewards[0] > rewards[1] > rewards[2]
    assert all(r.verifier == "rubric_ranking/1" and len(r.checks) == 2 for r in reply.responses[:3])
    assert reply.responses[3].passed
    # 3 pairs x 2 orders, minus the pairs the praise pre-check decides without a call.
    assert len(critic.requests) == 2


def test_lone_rubric_item_without_reference_is_failed_precondition() -> None:
    task = pb.TaskSpec(kind=pb.TASK_KIND_RUBRIC, rubric=pb.RubricReference())
    with scripted_critic(lambda m: verdict_json("A")) as critic:
        with judge(critic_base_url=critic.base_url) as (stub, _):
            with pytest.raises(grpc.RpcError) as error:
                stub.Score(pb.ScoreRequest(task=task, response="r"), timeout=30)
    assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION


def test_verifiable_groups_are_written_as_critic_refinement_pairs(tmp_path: Path) -> None:
    batch = pb.ScoreBatchRequest(requests=[
        math_item("4", r"\boxed{4}", task_id="m1", prompt="2+2?"),
        math_item("4", r"\boxed{5}", task_id="m1", prompt="2+2?"),
        math_item("4", r"\boxed{4.0}", task_id="m1", prompt="2+2?"),
        math_item("9", r"\boxed{9}", task_id="m2", prompt="3*3?"),  # a group of one: no pair
    ])
    with judge(critic_data_dir=str(tmp_path)) as (stub, _):
        stub.ScoreBatch(batch, timeout=60)
    rows = [json.loads(line) for line in (tmp_path / "critic_refinement.jsonl").read_text().splitlines()]
    assert sorted((r["chosen"], r["rejected"]) for r in rows) == [(r"\boxed{4.0}", r"\boxed{5}"),
                                                                  (r"\boxed{4}", r"\boxed{5}")]
    assert all(r["prompt"] == "2+2?" and r["chosen_reward"] == 1.0 and r["rejected_reward"] == 0.0 for r in rows)


def test_export_critic_data_appends_the_pairs_the_controller_sends(tmp_path: Path) -> None:
    def request(dataset: str, **extra: object) -> pb.ExportCriticDataRequest:
        return pb.ExportCriticDataRequest(prompt="2+2?", dataset=dataset, samples=[
            pb.CriticDataSample(response=r"\boxed{4}", reward=1.0, verifier="math_equivalence/1"),
            pb.CriticDataSample(response=r"\boxed{5}", reward=0.0, verifier="math_equivalence/1"),
            pb.CriticDataSample(response="four-ish", reward=0.7, verifier="math_equivalence/1"),
        ], **extra)

    with judge(critic_data_dir=str(tmp_path)) as (stub, _):
        first = stub.ExportCriticData(request("step-7", prompt_id="m1"), timeout=30)
        again = stub.ExportCriticData(request("step-7", min_margin=0.2), timeout=30)
        default = stub.ExportCriticData(request(""), timeout=30)
        tied = stub.ExportCriticData(pb.ExportCriticDataRequest(prompt="q", dataset="step-7", samples=[
            pb.CriticDataSample(response="a", reward=1.0), pb.CriticDataSample(response="b", reward=1.0)]),
            timeout=30)
    assert (first.rows_written, first.path) == (2, str(tmp_path / "step-7.jsonl"))  # margin 0.5: 1>0, 0.7>0
    assert again.rows_written == 3  # margin 0.2 also pairs 1.0 > 0.7
    assert (default.rows_written, default.path) == (2, str(tmp_path / "critic_refinement.jsonl"))
    assert tied.rows_written == 0
    rows = [json.loads(line) for line in (tmp_path / "step-7.jsonl").read_text().splitlines()]
    assert len(rows) == 5  # appended, not overwritten
    assert {(r["chosen"], r["rejected"]) for r in rows[:2]} == {(r"\boxed{4}", r"\boxed{5}"), ("four-ish", r"\boxed{5}")}
    assert rows[0]["prompt_id"] == "m1" and rows[0]["verifier"] == "math_equivalence/1"
    assert rows[2]["prompt_id"].startswith("sha256:") and rows[2]["prompt_id"] == rows[3]["prompt_id"]
    assert all(r["prompt"] == "2+2?" and r["chosen_reward"] > r["rejected_reward"] for r in rows)


@pytest.mark.parametrize(("request_", "field"), [
    (pb.ExportCriticDataRequest(prompt="q", dataset="../escape"), "dataset"),
    (pb.ExportCriticDataRequest(prompt=" ", dataset="d"), "prompt"),
    (pb.ExportCriticDataRequest(prompt="q", samples=[pb.CriticDataSample(response="a", reward=float("nan"))]),
     "samples[0].reward"),
    (pb.ExportCriticDataRequest(prompt="q", min_margin=-1), "min_margin"),
])
def test_export_critic_data_rejects_bad_requests(tmp_path: Path, request_: pb.ExportCriticDataRequest,
                                                 field: str) -> None:
    with judge(critic_data_dir=str(tmp_path)) as (stub, _):
        with pytest.raises(grpc.RpcError) as error:
            stub.ExportCriticData(request_, timeout=30)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert (error.value.details() or "").startswith(f"{field}: ")
    assert list(tmp_path.iterdir()) == []


def test_export_critic_data_without_a_directory_is_a_failed_precondition() -> None:
    with judge() as (stub, _):
        with pytest.raises(grpc.RpcError) as error:
            stub.ExportCriticData(pb.ExportCriticDataRequest(prompt="q", samples=[
                pb.CriticDataSample(response="a", reward=1.0), pb.CriticDataSample(response="b", reward=0.0)]),
                timeout=30)
    assert error.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert "critic_data_dir" in (error.value.details() or "")
