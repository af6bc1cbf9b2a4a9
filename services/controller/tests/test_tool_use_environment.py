"""The multi-turn tool-use environment: a k2rl synth task, the synth tool simulator (against the
replay test double as its model) and real judge and sandbox processes scoring the rubric."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from k2rl.controller.environments import EnvironmentServices, build_environment, registered
from k2rl.core.client import close_stub, create_stub
from k2rl.core.launcher import LocalCluster
from k2rl.judge.v1 import judge_pb2_grpc
from k2rl.models.tokenizer import ByteTokenizer
from k2rl.synth.agents import AgentSpec
from k2rl.synth.outputs import rl_environment_record, write_jsonl
from k2rl.synth.simulators import OutcomeWeights
from k2rl.synth.tasks import Checkpoint, CodeTest, Rubric, SynthTask
from k2rl.synth.testing import Cassette, replay_server
from k2rl.synth.tools import load_fixture_tools

pytestmark = pytest.mark.slow

WORLD = Cassette.from_dict({"rules": [{"name": "world", "system_contains": "world model", "replies": [
    {"content": json.dumps({"result": {"temperature_c": 18, "condition": "sunny"},
                            "state_updates": {"last_location": "Lyon"}})}]}]})


@pytest.fixture(scope="module")
def judge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[judge_pb2_grpc.JudgeServiceStub]:
    logs = tmp_path_factory.mktemp("logs")
    with LocalCluster(("sandbox", "judge"), free_ports=True, log_dir=logs).serving(90) as cluster:
        stub = create_stub(judge_pb2_grpc.JudgeServiceStub, cluster.settings["judge"].address,
                           cluster.client_options())
        yield stub
        close_stub(stub)


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    tools = tuple(t for t in load_fixture_tools() if t.domain == "weather")
    agent = AgentSpec("agent-00000", "Meteo", "a weather desk assistant", "weather", "brief", tools)
    task = SynthTask("agent-00000-t000", agent.agent_id, "weather", "simple", "tool_use",
                     "What is the weather in Lyon right now?",
                     Rubric(("reports the weather in Lyon",), ("get_current_weather",),
                            (Checkpoint("get_current_weather", {"location": "Lyon"}),), {"last_location": "Lyon"}))
    path = tmp_path / "rl_environment.jsonl"
    write_jsonl(path, [rl_environment_record(task, agent, OutcomeWeights(1.0, 0.0, 0.0))])
    return path


@pytest.fixture()
def coding_dataset(tmp_path: Path) -> Path:
    tools = tuple(t for t in load_fixture_tools() if t.domain == "math")
    agent = AgentSpec("agent-00001", "Cy", "a programmer", "Python", "writes complete programs", tools)
    task = SynthTask("agent-00001-t003", agent.agent_id, "coding", "moderate", "coding",
                     "Write a Python program that reads an integer n and prints 2*n.", Rubric(("passes the tests",)),
                     tests=(CodeTest("t0", "3\n", "6\n"), CodeTest("t1", "-4\n", "-8\n")))
    path = tmp_path / "coding.jsonl"
    write_jsonl(path, [rl_environment_record(task, agent, OutcomeWeights())])
    return path


def k2_call(name: str, arguments: dict) -> str:
    return ("<|tool_calls_section_begin|><|tool_call_begin|>functions." + name + ":0<|tool_call_argument_begin|>"
            + json.dumps(arguments) + "<|tool_call_end|><|tool_calls_section_end|>")


def test_episode_calls_simulated_tools_and_is_scored_by_the_rubric(dataset: Path, judge) -> None:
    assert "tool_use" in registered()
    with replay_server(WORLD) as world:
        options = {"tool_simulator_base_url": world.base_url, "tool_simulator_model": "replay", "max_turns": "3"}
        setup = build_environment("tool_use", options, str(dataset), 0, EnvironmentServices(judge=judge))
        env = setup.new_episode()
        prompt = env.reset(setup.tasks.task(0))
        assert prompt.startswith("<|im_system|>tool_declare<|im_middle|>")
        assert "What is the weather in Lyon right now?" in prompt
        assert prompt.endswith("<|im_assistant|>assistant<|im_middle|>")

        # The model's turn reaches step the way the rollout manager decodes it: K2's markers kept.
        turn_ids = ByteTokenizer().encode(k2_call("get_current_weather", {"location": "Lyon"}) + "<|im_end|>")
        first = env.step(env.decode_action(ByteTokenizer(), turn_ids))
        assert not first.done and first.reward == 0.0
        assert first.observation.startswith("<|im_system|>tool<|im_middle|>## Return of functions.get_current_weather:0\n")
        assert "sunny" in first.observation and world.hits["world"] == 1

        # Partial rollout: the episode continues from a snapshot in a fresh instance.
        resumed = setup.new_episode()
        resumed.restore(json.loads(json.dumps(env.snapshot())))
        final = resumed.step("It is 18C and sunny in Lyon.")
    assert final.done and final.passed and final.reward == 1.0
    assert final.info["verifier"].startswith("tool_use_checkpoints")


def test_json_calls_with_wrong_arguments_fail_the_rubric(dataset: Path, judge) -> None:
    with replay_server(WORLD) as world:
        options = {"tool_simulator_base_url": world.base_url, "tool_simulator_model": "replay", "max_turns": "2"}
        setup = build_environment("tool_use", options, str(dataset), 0, EnvironmentServices(judge=judge))
        env = setup.new_episode()
        env.reset(setup.tasks.task(0))
        first = env.step('{"name": "get_current_weather", "arguments": {"city": "Lyon"}}')  # schema wants location
        assert "invalid arguments" in first.observation and world.hits["world"] == 0
        last = env.step('{"name": "get_current_weather", "arguments": {"location": "Paris"}}')  # max_turns reached
    assert last.done and not last.passed and last.reward < 1.0


@pytest.mark.parametrize(("program", "reward"), [("print(int(input()) * 2)", 1.0), ("print(6)", 0.5)])
def test_coding_tasks_run_for_real_in_the_sandbox(coding_dataset: Path, judge, program: str, reward: float) -> None:
    options = {"tool_simulator_base_url": "http://127.0.0.1:9/v1", "tool_simulator_model": "unused"}
    setup = build_environment("tool_use", options, str(coding_dataset), 0, EnvironmentServices(judge=judge))
    env = setup.new_episode()
    env.reset(setup.tasks.task(0))
    result = env.step(f"Here you go:\n```python\n{program}\n```")
    assert result.done and result.reward == pytest.approx(reward)
    assert result.info["verifier"].startswith("code")


def test_bad_options_and_datasets_are_rejected(dataset: Path, tmp_path: Path) -> None:
    services = EnvironmentServices(judge=object())
    with pytest.raises(ValueError, match="tool_simulator_base_url"):
        build_environment("tool_use", {}, str(dataset), 0, services)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "hi", "task": {}}) + "\n")
    with pytest.raises(ValueError, match="not a k2rl synth rl_environment row"):
        build_environment("tool_use", {"tool_simulator_base_url": "http://x/v1", "tool_simulator_model": "m"},
                          str(bad), 0, services)
