"""Environments, the registry, trajectory records, the run store and experiment files, without gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from k2rl.controller.environments import EnvironmentServices, build_environment, registered
from k2rl.controller.environments.arithmetic import ArithmeticOptions, ArithmeticTasks, corpus
from k2rl.controller.environments.judged import JsonlTasks
from k2rl.controller.experiment import RunDirectory, iteration_metrics, load_experiment
from k2rl.controller.run_store import RunStore
from k2rl.controller.scheduler.batching import enforce_staleness, split_stale, split_steps
from k2rl.controller.scheduler.loop import applied_before_restart
from k2rl.controller.scheduler.schedules import temperature_at
from k2rl.controller.trajectories import PromptGroup, Sample, SampleStatus, SpanRole
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.core.store import SqliteStore, VersionConflict
from k2rl.models.tokenizer import ByteTokenizer
from k2rl.trainer.v1 import trainer_pb2

DEMO = Path(__file__).parents[3] / "configs" / "demo.yaml"


def test_arithmetic_tasks_are_deterministic_disjoint_and_verified() -> None:
    options = ArithmeticOptions(max_operand=9, operators="+*")
    train, held_out = ArithmeticTasks(options), ArithmeticTasks(options, held_out=True)
    assert train.task(5) == ArithmeticTasks(options).task(5)
    assert train.task(5).task_id != held_out.task(5).task_id
    setup = build_environment("arithmetic", {"max_operand": "9"}, "", 0, EnvironmentServices())
    env = setup.new_episode()
    task = setup.tasks.task(3)
    a, b = task.prompt.rstrip("=").split("+")
    assert env.reset(task) == task.prompt
    right, wrong = env.step(f" {int(a) + int(b)}"), setup.new_episode()
    wrong.reset(task)
    assert right.done and right.reward == 1.0 and right.passed
    assert wrong.step(f"{int(a) + int(b) + 1}").reward == 0.0
    answer_ids = ByteTokenizer().encode(f"{int(a) + int(b)}<|im_end|>")
    assert setup.new_episode().decode_action(ByteTokenizer(), answer_ids) == f"{int(a) + int(b)}"  # markers dropped
    assert all("=" in line for line in corpus(options, 10, seed=0))
    with pytest.raises(ValueError, match="operators"):
        ArithmeticOptions.from_options({"operators": "/"}, 0)


def test_registry_rejects_unknown_and_unconfigured_environments(tmp_path: Path) -> None:
    assert {"arithmetic", "math", "code"} <= set(registered())
    with pytest.raises(ValueError, match="unknown environment"):
        build_environment("chess", {}, "", 0, EnvironmentServices())
    with pytest.raises(ValueError, match="needs the judge"):
        build_environment("math", {}, str(tmp_path / "x.jsonl"), 0, EnvironmentServices())
    data = tmp_path / "math.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"{i}+1?", "answer": str(i + 1)}) for i in range(5)))
    tasks = JsonlTasks(data, seed=3)
    first_epoch = {tasks.task(i).task_id for i in range(5)}
    assert len(first_epoch) == 5 and tasks.task(0) == JsonlTasks(data, seed=3).task(0)


def test_sample_spans_record_weight_versions_and_round_trip() -> None:
    sample = Sample(0, token_budget=16)
    sample.add_tokens(SpanRole.MODEL, [1, 2], [-0.1, -0.2], version=3)
    sample.add_tokens(SpanRole.MODEL, [3], [-0.3], version=3)
    sample.add_tokens(SpanRole.MODEL, [4], [-0.4], version=4)
    sample.add_tokens(SpanRole.TOOL, [5, 6], [], version=0)
    assert [(s.role, s.start, s.end, s.weight_version) for s in sample.spans] == [
        (SpanRole.MODEL, 0, 3, 3), (SpanRole.MODEL, 3, 4, 4), (SpanRole.TOOL, 4, 6, 0)]
    assert sample.model_tokens == 4 and sample.oldest_version == 3
    assert Sample.from_json(json.loads(json.dumps(sample.to_json()))) == sample


def test_staleness_limits_restart_samples_and_steps_keep_groups_whole() -> None:
    old = Sample(0, 8, SampleStatus.PAUSED, [1], [-1.0], resume_count=1)
    old.add_tokens(SpanRole.MODEL, [2], [-1.0], version=1)
    group = PromptGroup("g0", "arithmetic", {}, [256], [old, Sample(1, 8)], 0)
    assert enforce_staleness([group], pb.PartialRolloutConfig(max_version_lag=2), current_version=5) == 1
    assert group.samples[0].status is SampleStatus.PENDING and not group.samples[0].output_token_ids
    groups = [PromptGroup(f"g{i}", "a", {}, [], [], 0) for i in range(5)]
    assert [len(b) for b in split_steps(groups, 2)] == [3, 2] and split_steps(groups[:1], 4) == [groups[:1]]


def test_temperature_decays_linearly_and_by_cosine() -> None:
    linear = pb.TemperatureSchedule(initial_temperature=1.0, final_temperature=0.5, decay_iterations=10,
                                    shape=pb.SCHEDULE_SHAPE_LINEAR)
    assert [temperature_at(linear, i) for i in (0, 5, 10, 20)] == pytest.approx([1.0, 0.75, 0.5, 0.5])
    cosine = pb.TemperatureSchedule(initial_temperature=1.0, final_temperature=0.5, decay_iterations=10,
                                    shape=pb.SCHEDULE_SHAPE_COSINE)
    assert temperature_at(cosine, 1) > temperature_at(linear, 1)


def test_iteration_commit_is_atomic_and_conditioned_on_the_run_record(tmp_path: Path) -> None:
    store = RunStore(SqliteStore(tmp_path / "s.db"))
    store.create_run(pb.Run(run_id="r"))
    group = PromptGroup("g000000000", "arithmetic", {}, [256], [Sample(0, 4, SampleStatus.FINISHED, [1], [-1.0],
                                                                       reward=1.0)], 0)
    store.save_group("r", group)
    run, version = store.get_run("r")
    run.completed_iterations = 1
    event = pb.WatchRunResponse(iteration=0)
    store.commit_iteration(run, version, pb.IterationRecord(iteration=0), [group], event)
    with pytest.raises(VersionConflict):  # a second commit of the same iteration writes nothing
        store.commit_iteration(run, version, pb.IterationRecord(iteration=0), [group], event)
    assert store.iteration_count("r") == 1 and store.buffered_groups("r") == []
    assert [t.trajectory_id for t in store.finished_trajectories("r")] == ["g000000000/0"]
    assert [e.sequence for e in store.events("r", 0)] == [1]


@pytest.mark.parametrize("name", ["demo.yaml", "demo-quick.yaml"])
def test_demo_configs_parse_into_a_complete_experiment(name: str) -> None:
    experiment = load_experiment(DEMO.parent / name)
    config = experiment.run
    assert config.model_preset == "k2-nano" and config.environments[0].name == "arithmetic"
    assert experiment.pretrain.steps > 0 and experiment.evaluation.tasks > 0 and experiment.engine_workers >= 1
    assert experiment.services["inference"]["checkpoint_engine_replica"] is True
    # the trainer's publish buckets must fit the engine's IPC buffers
    assert experiment.services["trainer"].get("publish_bucket_bytes", 64 << 20) <= \
        experiment.services.get("checkpoint_engine", {}).get("bucket_bytes", 64 << 20)


def test_an_experiment_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("run: {model_preset: k2-nano}\npretrian: {steps: 3}\n")
    with pytest.raises(ValueError, match="pretrian"):
        load_experiment(path)


def test_inference_replicas_of_an_experiment_must_be_a_positive_integer(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("run: {model_preset: k2-nano}\ninference_replicas: 3\n")
    assert load_experiment(path).inference_replicas == 3
    assert load_experiment(DEMO).inference_replicas == 1
    path.write_text("run: {model_preset: k2-nano}\ninference_replicas: 0\n")
    with pytest.raises(ValueError, match="inference_replicas"):
        load_experiment(path)


def test_demo_config_parses_and_run_directory_writes_metrics_and_plot(tmp_path: Path) -> None:
    config = load_experiment(DEMO).run
    directory = RunDirectory(tmp_path, "r")
    directory.write_config(config)
    for i, reward in enumerate((0.2, 0.5)):
        record = pb.IterationRecord(iteration=i, environments=[pb.EnvironmentStats(name="arithmetic",
                                                                                    reward_mean=reward)],
                                    phases=[pb.PhaseTiming(phase=pb.ITERATION_PHASE_ROLLOUT, duration_ms=5)])
        directory.append_metrics(iteration_metrics(record))
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [x["arithmetic/reward_mean"] for x in lines] == [0.2, 0.5] and lines[0]["phase_ms/rollout"] == 5
    assert directory.plot_rewards().stat().st_size > 0
    assert load_experiment(tmp_path / "r" / "config.yaml").run == config


def test_a_step_applied_before_a_restart_is_recorded_without_figures() -> None:
    measured = trainer_pb2.TrainStepMetrics(step=4, loss_kind=trainer_pb2.LOSS_KIND_RL_K15, policy_loss=0.25,
                                            trained_tokens=96)
    lost = applied_before_restart(4)
    assert lost.step == 5 and lost.trained_tokens == 0
    line = iteration_metrics(pb.IterationRecord(iteration=2, train_steps=[measured, lost]))
    assert line["train/step"] == 5 and line["train/policy_loss"] == 0.25  # the loss of the last measured step
    assert "train/policy_loss" not in iteration_metrics(pb.IterationRecord(iteration=3, train_steps=[lost]))


def test_split_stale_restarts_samples_older_than_the_version_lag() -> None:
    def group(group_id: str, versions: list[int]) -> PromptGroup:
        samples = []
        for index, version in enumerate(versions):
            sample = Sample(index, 8, status=SampleStatus.FINISHED, reward=1.0)
            sample.add_tokens(SpanRole.MODEL, [1, 2], [-0.1, -0.2], version)
            samples.append(sample)
        return PromptGroup(group_id, "arithmetic", {}, [1], samples, 0)

    fresh_group, stale_group = group("g0", [4, 5]), group("g1", [5, 2])
    fresh, stale = split_stale([fresh_group, stale_group], max_version_lag=2, current_version=5)
    assert fresh == [fresh_group] and stale == [stale_group]
    assert stale_group.samples[0].status is SampleStatus.FINISHED  # within the bound: kept
    restarted = stale_group.samples[1]
    assert restarted.status is SampleStatus.PENDING and restarted.output_token_ids == [] and not stale_group.complete
    assert split_stale([group("g2", [0])], max_version_lag=0, current_version=9) == ([group("g2", [0])], [])
