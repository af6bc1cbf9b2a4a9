"""The pipeline against the project's own inference service running k2-nano (random init),
with the judge using the same endpoint as its critic; both real processes on loopback.

This proves the wiring only: every role's calls reach the model through its OpenAI HTTP API
and every stage runs to the end. k2-nano's replies are noise, so personas and tasks come
from the fallbacks and no quality is expected. k2-nano's context is 2048 byte tokens:
one tool per agent and short completions keep every prompt inside it."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from k2rl.core.launcher import LocalCluster
from k2rl.core.net import free_loopback_ports
from k2rl.core.store import open_store
from k2rl.synth.config import SynthConfig
from k2rl.synth.outputs import read_jsonl
from k2rl.synth.pipeline import run_pipeline

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, str]]:
    directory = tmp_path_factory.mktemp("synth_k2_nano")
    (http_port,) = free_loopback_ports(1)
    base_url = f"http://127.0.0.1:{http_port}/v1"
    config = directory / "services.yaml"
    config.write_text(yaml.safe_dump({
        "inference": {"model": "k2-nano", "http_port": http_port, "max_running_requests": 8},
        "judge": {"critic_base_url": base_url, "critic_model": "k2-nano", "critic_max_tokens": 8,
                  "critic_timeout_s": 60, "math_workers": 1},
    }))
    with LocalCluster(("inference", "judge"), config_file=config, free_ports=True,
                      log_dir=directory / "logs").serving(120) as cluster:
        yield cluster, base_url


def _finished_requests(cluster: LocalCluster) -> float:
    port = cluster.settings["inference"].prometheus_port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("k2rl_inference_requests_finished_total"))


def test_all_stages_run_against_k2_nano(tmp_path: Path, services: tuple[LocalCluster, str]) -> None:
    cluster, base_url = services
    config = SynthConfig(
        run_id="k2-nano", out_dir=tmp_path, concurrency=2,
        llm={"base_url": base_url, "model": "k2-nano", "max_tokens": 16, "timeout_s": 120, "max_retries": 1},
        tools={"domains": ["weather"]}, agents={"count": 1, "tools_per_agent": 1},
        tasks={"per_agent": 2}, episodes={"attempts_per_task": 1, "max_agent_turns": 2, "max_user_turns": 1},
        judge={"address": cluster.settings["judge"].address, "timeout_s": 120},
    ).check()
    before = _finished_requests(cluster)
    summary = run_pipeline(config, show_progress=False)

    assert (summary.agents, summary.tasks, summary.tasks_done, summary.tasks_failed) == (1, 2, 2, 0)
    assert summary.trajectories == 2
    usage = summary.usage[f"k2-nano@{base_url}"]
    assert usage["calls"] >= 1 + 2 + 2 * 2  # persona, two tasks, per episode a user opening and an agent turn
    assert usage["completion_tokens"] > 0 and usage["failures"] == 0
    # The judge's critic calls go to the same inference service, on top of the pipeline's own.
    assert _finished_requests(cluster) - before >= usage["calls"]

    store = open_store(None, namespace=config.namespace(), default_sqlite_path=tmp_path / "state.db")
    try:
        results = [v.json() for _, v in store.scan("result/")]
    finally:
        store.close()
    for result in results:
        (attempt,) = result["attempts"]
        messages = attempt["trajectory"]["messages"]
        assert [m["role"] for m in messages[:3]] == ["system", "user", "assistant"]
        assert attempt["judgement"]["checks"]  # judged, whatever the verdict
    sft = read_jsonl(tmp_path / "sft.jsonl")
    assert len(sft) == sum(1 for r in results if r["kept"])
    assert len(read_jsonl(tmp_path / "rl_environment.jsonl")) == 2
    assert json.loads((tmp_path / "report.json").read_text())["tasks_done"] == 2
