"""The pipeline end to end against the replay server (test double for the model) with the real
judge and sandbox services as separate processes: tools -> agents and tasks -> trajectories
-> judged -> outputs; then a run killed with kill -9 mid-way and restarted."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k2rl.core.launcher import LocalCluster
from k2rl.core.store import open_store
from k2rl.synth.config import SynthConfig, load_config
from k2rl.synth.outputs import read_jsonl
from k2rl.synth.pipeline import SynthPipeline, run_pipeline
from k2rl.synth.testing import ReplayServer, replay_server

pytestmark = pytest.mark.slow

K2RL = str(Path(sys.executable).with_name("k2rl"))


@pytest.fixture(scope="module")
def replay() -> Iterator[ReplayServer]:
    with replay_server() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, replay: ReplayServer) -> Iterator[LocalCluster]:
    directory = tmp_path_factory.mktemp("synth_services")
    config = directory / "services.yaml"
    config.write_text(yaml.safe_dump({"judge": {"critic_base_url": replay.base_url, "critic_model": "replay",
                                                "critic_timeout_s": 30, "math_workers": 1}}))
    with LocalCluster(("sandbox", "judge"), config_file=config, free_ports=True,
                      log_dir=directory / "logs").serving(90) as cluster:
        yield cluster


def synth_config(out_dir: Path, replay: ReplayServer, cluster: LocalCluster, **changes) -> dict:
    return {
        "run_id": "replay-test", "out_dir": str(out_dir), "seed": 0, "concurrency": 8,
        "llm": {"base_url": replay.base_url, "model": "replay", "max_retries": 1, "timeout_s": 30},
        "tools": {"fixtures": True, "domains": ["weather"]},
        "agents": {"count": 3, "tools_per_agent": 4},
        "tasks": {"per_agent": 3, "coding_per_agent": 1},
        "episodes": {"attempts_per_task": 2},
        "judge": {"address": cluster.settings["judge"].address, "timeout_s": 60},
        "sandbox": {"address": cluster.settings["sandbox"].address},
    } | changes


def test_three_stages_end_to_end(tmp_path: Path, replay: ReplayServer, cluster: LocalCluster) -> None:
    config = SynthConfig(**synth_config(tmp_path, replay, cluster)).check()
    summary = run_pipeline(config, show_progress=False)
    assert replay.unmatched == 0

    assert summary.tools == 4 and summary.agents == 3 and summary.tasks == 3 * 4
    assert summary.tasks_done == 12 and summary.tasks_failed == 0
    store = open_store(None, namespace=config.namespace(), default_sqlite_path=tmp_path / "state.db")
    results = [v.json() for _, v in store.scan("result/")]
    tasks = [v.json() for _, v in store.scan("task/")]
    store.close()
    assert len(results) == 12 and summary.trajectories == sum(len(r["attempts"]) for r in results)

    # Stage 2: typed rubrics, both kinds, difficulties simple -> complex per agent.
    assert Counter(t["kind"] for t in tasks) == {"tool_use": 9, "coding": 3}
    assert all(t["rubric"]["success_criteria"] for t in tasks)
    assert {t["difficulty"] for t in tasks if t["kind"] == "tool_use"} == {"simple", "moderate", "complex"}

    # Stage 3 and the filter: rejection sampling keeps only passing trajectories.
    judgements = [a["judgement"] for r in results for a in r["attempts"]]
    assert any(j["passed"] for j in judgements) and any(not j["passed"] for j in judgements)
    for result in results:
        attempts = result["attempts"]
        assert all(not a["judgement"]["passed"] for a in attempts[:-1])  # stopped at the first pass
        assert result["kept"] == (attempts[-1]["trajectory"]["trajectory_id"]
                                  if attempts[-1]["judgement"]["passed"] else None)
    trajectories = [a["trajectory"] for r in results for a in r["attempts"]]
    outcomes = Counter(t["outcome"] for traj in trajectories for t in traj["tool_results"])
    assert outcomes["malformed_call"] > 0  # the cassette's malformed call was answered, not crashed on
    coding = [traj for traj in trajectories if traj["kind"] == "coding"]
    assert coding and all(traj["execution"]["total"] == 2 for traj in coding)
    assert {traj["execution"]["pass_rate"] for traj in coding} <= {0.0, 0.5, 1.0}
    assert any(traj["execution"]["pass_rate"] == 1.0 for traj in coding)  # ran for real in the sandbox
    assert any(check["name"].startswith("tool_use_checkpoints") for j in judgements for check in j["checks"])
    assert any(check["name"].startswith("instruction") for j in judgements for check in j["checks"])

    # Outputs: SFT rows are exactly the kept trajectories, in OpenAI chat format and K2 tokens.
    sft = read_jsonl(tmp_path / "sft.jsonl")
    kept = sorted(r["kept"] for r in results if r["kept"])
    assert sorted(row["metadata"]["trajectory_id"] for row in sft) == kept and summary.kept == len(kept)
    for row in sft:
        assert [m["role"] for m in row["messages"]][:2] == ["system", "user"]
        assert row["messages"][-1]["role"] == "assistant" and row["tools"]
    k2 = read_jsonl(tmp_path / "sft_k2.jsonl")
    assert len(k2) == len(sft) and all(r["text"].startswith("<|im_system|>tool_declare") for r in k2)
    assert any("<|tool_call_begin|>functions." in r["text"] for r in k2)
    env = read_jsonl(tmp_path / "rl_environment.jsonl")
    assert len(env) == 12 and all(row["task"]["rubric"] and row["agent"]["tools"] for row in env)
    report = json.loads((tmp_path / "report.json").read_text())
    assert sum(row["judged"] for row in report["pass_rates"].values()) == summary.trajectories
    assert set(report["pass_rates"]) == {"weather", "coding"}
    coverage = json.loads((tmp_path / "tool_coverage.json").read_text())  # stage 1's coverage map
    assert (tmp_path / "tool_coverage.png").stat().st_size > 0 and report["outputs"]["tool_coverage_png"]
    assert coverage["tools"] == sum(coverage["by_source"].values()) == summary.tools

    # Rerunning a finished run does no new work and writes the same outputs.
    requests = len(replay.requests)
    again = run_pipeline(config, show_progress=False)
    assert len(replay.requests) == requests and again.kept == summary.kept
    assert read_jsonl(tmp_path / "sft.jsonl") == sft


def _result_versions(path: Path, namespace: str) -> dict[str, int]:
    store = open_store(None, namespace=namespace, default_sqlite_path=path)
    try:
        return {key: versioned.version for key, versioned in store.scan("result/")}
    finally:
        store.close()


def test_kill_9_mid_run_then_restart_loses_and_duplicates_nothing(tmp_path: Path, cluster: LocalCluster) -> None:
    # A slow replay server keeps the run in flight long enough to kill it part-way.
    with replay_server(latency_s=0.05) as slow:
        settings = synth_config(tmp_path / "out", slow, cluster, concurrency=2, run_id="kill-test",
                                agents={"count": 2, "tools_per_agent": 4})
        settings["llm"]["max_concurrency"] = 2
        config_path = tmp_path / "synth.yaml"
        config_path.write_text(yaml.safe_dump({"synth": settings}))
        config = load_config(config_path)
        state_db = tmp_path / "out" / "state.db"
        total_tasks = 2 * 4
        process = subprocess.Popen([K2RL, "synth", str(config_path), "--quiet"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                if state_db.exists() and len(_result_versions(state_db, config.namespace())) >= 2:
                    break
                time.sleep(0.05)
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            process.send_signal(signal.SIGKILL)
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
        before = _result_versions(state_db, config.namespace())
        assert 2 <= len(before) < total_tasks

        requests_before = len(slow.requests)
        restarted = subprocess.run([K2RL, "synth", str(config_path), "--quiet"], capture_output=True, timeout=300)
        assert restarted.returncode == 0, restarted.stderr.decode()[-2000:]
        summary = json.loads(restarted.stdout.decode().strip().splitlines()[-1])

    after = _result_versions(state_db, config.namespace())
    assert len(after) == total_tasks == summary["tasks_done"]  # nothing lost
    assert {key: after[key] for key in before} == before  # finished items were not redone
    assert len(slow.requests) > requests_before
    sft = read_jsonl(tmp_path / "out" / "sft.jsonl")
    ids = [row["metadata"]["trajectory_id"] for row in sft]
    assert len(ids) == len(set(ids)) == summary["kept"]  # nothing duplicated
    pipeline = SynthPipeline(config, show_progress=False)
    try:
        results = list(pipeline.results())
    finally:
        pipeline.store.close()
    assert sorted(ids) == sorted(r["kept"] for r in results if r["kept"])
    assert len({r["task_id"] for r in results}) == total_tasks
