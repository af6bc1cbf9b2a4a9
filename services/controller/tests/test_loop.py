"""The RL loop against in-process test doubles: phases, partial rollout, durable records."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from doubles import Doubles, serve_doubles

from k2rl.controller.run_store import RunStore
from k2rl.controller.runs import RunManager
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.trajectories import SampleStatus
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.core.client import ClientOptions, create_stub
from k2rl.core.errors import FailedPrecondition, InvalidArgument
from k2rl.core.store import SqliteStore
from k2rl.models.tokenizer import load_tokenizer


def demo_config(iterations: int = 4, segment_budget: int = 8) -> pb.RunConfig:
    return pb.RunConfig(
        model_preset="k2-nano", iterations=iterations, prompts_per_iteration=4, samples_per_prompt=4,
        environments=[pb.EnvironmentSpec(name="arithmetic", weight=1.0, token_budget=64,
                                         options={"max_operand": "50"})],
        partial_rollout=pb.PartialRolloutConfig(segment_token_budget=segment_budget),
        rl_loss={"tau": 0.1}, seed=7, max_concurrent_rollouts=8,
        temperature_schedule=pb.TemperatureSchedule(initial_temperature=1.0, final_temperature=0.6,
                                                    decay_iterations=3, shape=pb.SCHEDULE_SHAPE_LINEAR))


@pytest.fixture
def doubles() -> Doubles:
    served = serve_doubles(long_padding=10)
    yield served
    served.server.stop(0)


def manager(doubles: Doubles, path: Path) -> RunManager:
    store = RunStore(SqliteStore(path))
    connect = lambda: ServiceClients.connect(  # noqa: E731
        doubles.dependencies, lambda stub, address: create_stub(stub, address, ClientOptions()))
    return RunManager(store, connect, load_tokenizer)


def test_run_trains_every_trajectory_once_and_resumes_partial_rollouts(doubles: Doubles, tmp_path: Path) -> None:
    runs = manager(doubles, tmp_path / "state.db")
    runs.start(demo_config(), "r1", resume=False)
    run = runs.wait("r1", timeout_s=60)
    assert run.state == pb.RUN_STATE_SUCCEEDED, run.error
    records = runs.store.iterations("r1")
    assert [r.iteration for r in records] == [0, 1, 2, 3]
    # The version bumps exactly on the iterations that trained, and the next rollout uses it.
    for record in records:
        assert record.new_weight_version == record.rollout_weight_version + (1 if record.train_steps else 0)
    assert [r.rollout_weight_version for r in records[1:]] == [r.new_weight_version for r in records[:-1]]
    assert sum(1 for r in records if r.train_steps) >= 3
    # Long-tail samples hit the 8-token segment budget, were paused and resumed later.
    assert sum(r.rollout.trajectories_paused for r in records) > 0
    assert sum(r.rollout.trajectories_resumed for r in records) > 0
    logged = list(runs.store.finished_trajectories("r1"))
    ids = [t.trajectory_id for t in logged]
    assert not [i for i, n in Counter(ids).items() if n > 1]
    assert sorted(ids) == sorted(doubles.trainer.trained_ids)
    assert all(len(t.output_logprobs) == len(t.output_token_ids) > 0 for t in logged)
    assert all(t.reward == 1.0 for t in logged)  # the double always answers right
    resumed = [t for t in logged if t.resume_count > 0]
    assert resumed and all(len({turn.weight_version for turn in t.turns}) >= 1 for t in resumed)
    # A sample resumed after an update records both versions, one per token span.
    assert any(len({turn.weight_version for turn in t.turns}) > 1 for t in resumed)
    # Colocated phase order on the services.
    assert doubles.trainer.calls[:4] == ["Onload", "TrainStep", "Offload", "PublishWeights"]
    assert doubles.inference.calls[:2] == ["WakeUp", "Sleep"]
    # Temperature decays from exploration to exploitation.
    temperatures = sorted({round(r.sampling_params.temperature, 3) for r in doubles.inference.requests})
    assert temperatures[0] == pytest.approx(0.6) and temperatures[-1] == pytest.approx(1.0)
    assert run.completed_iterations == 4 and run.weight_version == records[-1].new_weight_version == doubles.fleet.version


def test_iteration_token_budget_aborts_and_buffers_in_flight_samples(doubles: Doubles, tmp_path: Path) -> None:
    config = demo_config(iterations=1, segment_budget=0)
    config.partial_rollout.iteration_token_budget = 20
    runs = manager(doubles, tmp_path / "state.db")
    runs.start(config, "r2", resume=False)
    assert runs.wait("r2", timeout_s=60).state == pb.RUN_STATE_SUCCEEDED
    (record,) = runs.store.iterations("r2")
    assert record.rollout.trajectories_paused > 0
    assert doubles.inference.aborted
    buffered = runs.store.buffered_groups("r2")
    paused = [s for g in buffered for s in g.samples if s.status is SampleStatus.PAUSED]
    assert paused and all(len(s.output_logprobs) == len(s.output_token_ids) > 0 for s in paused)
    assert runs.get("r2").partial_rollouts_buffered == len(paused)


def test_bad_configs_and_second_active_run_are_refused(doubles: Doubles, tmp_path: Path) -> None:
    runs = manager(doubles, tmp_path / "state.db")
    bad = demo_config()
    bad.ClearField("environments")
    with pytest.raises(InvalidArgument):
        runs.start(bad, "x", resume=False)
    unknown = demo_config()
    unknown.environments[0].name = "chess"
    with pytest.raises(InvalidArgument, match="unknown environment"):
        runs.start(unknown, "y", resume=False)
    runs.start(demo_config(iterations=0), "forever", resume=False)
    with pytest.raises(FailedPrecondition):
        runs.start(demo_config(), "other", resume=False)
    runs.stop("forever", pb.STOP_MODE_AFTER_ITERATION, "test")
    stopped = runs.wait("forever", timeout_s=60)
    assert stopped.state == pb.RUN_STATE_STOPPED
    resumed = runs.start(pb.RunConfig(), "forever", resume=True)
    assert resumed.state == pb.RUN_STATE_RUNNING and resumed.config.seed == 7
    runs.stop("forever", pb.STOP_MODE_IMMEDIATE, "test")
    assert runs.wait("forever", timeout_s=60).state == pb.RUN_STATE_STOPPED


def test_trained_groups_are_exported_as_critic_data_at_the_configured_cadence(doubles: Doubles,
                                                                              tmp_path: Path) -> None:
    config = demo_config(iterations=4)
    config.critic_data.CopyFrom(pb.CriticDataExport(every_iterations=2, dataset="arith", min_margin=0.5))
    runs = manager(doubles, tmp_path / "state.db")
    runs.start(config, "critic", resume=False)
    assert runs.wait("critic", timeout_s=60).state == pb.RUN_STATE_SUCCEEDED
    records = runs.store.iterations("critic")
    k = config.samples_per_prompt
    exported_iterations = [r for r in records if r.iteration in (1, 3)]
    expected_groups = sum(e.trajectories for r in exported_iterations for e in r.environments) // k
    exports = doubles.judge.exports
    assert expected_groups > 0 and len(exports) == expected_groups
    assert len({e.prompt_id for e in exports}) == len(exports)
    tokenizer = load_tokenizer("k2-nano")
    responses_by_prompt: dict[str, list[str]] = {}
    for t in runs.store.finished_trajectories("critic"):
        prompt = tokenizer.decode(list(t.prompt_token_ids), skip_special_tokens=True)
        responses_by_prompt.setdefault(prompt, []).append(
            tokenizer.decode(list(t.output_token_ids), skip_special_tokens=True))
    for export in exports:
        assert export.dataset == "arith" and export.min_margin == 0.5
        assert export.prompt_id.startswith("arith-train-") and export.prompt.endswith("=")
        assert all(s.verifier == "exact_integer" and s.reward == 1.0 for s in export.samples)
        assert len(export.samples) == k  # the group's trained samples, as the model wrote them
        assert all(s.response in responses_by_prompt[export.prompt] for s in export.samples)


def test_disaggregated_rollout_overlaps_training_within_the_staleness_bound(tmp_path: Path) -> None:
    doubles = serve_doubles(token_delay_s=0.005, step_delay_s=0.5, long_padding=10)
    try:
        config = demo_config(iterations=4)
        config.partial_rollout.max_version_lag = 1
        store = RunStore(SqliteStore(tmp_path / "state.db"))
        runs = RunManager(store, lambda: ServiceClients.connect(
            doubles.dependencies, lambda stub, address: create_stub(stub, address, ClientOptions())),
            load_tokenizer, colocated=False, overlap_rollout=True)
        runs.start(config, "async", resume=False)
        assert runs.wait("async", timeout_s=60).state == pb.RUN_STATE_SUCCEEDED
        records = store.iterations("async")
        assert [r.iteration for r in records] == [0, 1, 2, 3]
        # Iteration n+1 rolled out before iteration n's weights were published: same rollout version.
        assert records[1].rollout_weight_version == records[0].rollout_weight_version
        # ... so it trained on off-policy tokens, never more than max_version_lag versions old.
        assert max(doubles.trainer.version_lags) == 1 and min(doubles.trainer.version_lags) >= 0
        ids = [t.trajectory_id for t in store.finished_trajectories("async")]
        assert len(ids) == len(set(ids)) and sorted(ids) == sorted(doubles.trainer.trained_ids)
        assert "Sleep" not in doubles.inference.calls and "Onload" not in doubles.trainer.calls
    finally:
        doubles.server.stop(0)
