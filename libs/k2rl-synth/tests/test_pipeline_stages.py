"""Stages 1 and 2 of the pipeline against the replay server: domain evolution feeding the tool
repository, agents and rubric tasks committed once to the state store, template fallbacks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from k2rl.synth.config import SynthConfig, load_config
from k2rl.synth.evolution import CATEGORY_MARKER, DOMAIN_MARKER, TOOL_MARKER
from k2rl.synth.pipeline import SynthPipeline
from k2rl.synth.tasks import validate_task
from k2rl.synth.testing import Cassette, demo_cassette, replay_server

SCHEMA = {"type": "object", "properties": {"city": {"type": "string", "description": "city"}}, "required": ["city"]}
EVOLUTION = [
    {"name": "categories", "system_contains": CATEGORY_MARKER, "replies": [{"content": json.dumps(
        {"categories": [{"name": "Travel", "description": "Getting around."}]})}]},
    {"name": "domains", "system_contains": DOMAIN_MARKER, "replies": [{"content": json.dumps(
        {"domains": [{"name": "trains", "description": "Rail journeys."}]})}]},
    {"name": "tools", "system_contains": TOOL_MARKER, "replies": [{"content": json.dumps({"tools": [
        {"name": "find_train", "description": "Find trains between two cities on a date.", "parameters": SCHEMA},
        {"name": "book_train_seat", "description": "Book a seat on a given train.", "parameters": SCHEMA}]})}]},
]


def run(pipeline: SynthPipeline, *, agents: bool = False, tasks: bool = False) -> tuple:
    """Stages 1 (and 2) in one event loop, as ``SynthPipeline.run`` does."""
    async def stages() -> tuple:
        try:
            tools = await pipeline.stage_tools()
            built_agents = await pipeline.stage_agents(tools) if agents or tasks else []
            built_tasks = await pipeline.stage_tasks(built_agents) if tasks else []
            return tools, built_agents, built_tasks
        finally:
            await pipeline.close_clients()

    return asyncio.run(stages())


def test_stage_1_evolves_synthetic_tools_next_to_the_real_ones(tmp_path: Path) -> None:
    cassette = Cassette.from_dict({"rules": EVOLUTION})
    with replay_server(cassette) as server:
        config = SynthConfig(run_id="stage1", out_dir=tmp_path, llm={"base_url": server.base_url, "model": "replay"},
                             tools={"domains": ["weather"], "evolve": {"n_categories": 1, "domains_per_category": 1,
                                                                       "tools_per_domain": 2}})
        pipeline = SynthPipeline(config, show_progress=False)
        tools, _, _ = run(pipeline)
        assert {(t.domain, t.source) for t in tools} == {("weather", "openai"), ("trains", "synthetic")}
        assert {t.name for t in tools if t.source == "synthetic"} == {"find_train", "book_train_seat"}
        calls = len(server.requests)
        assert calls == 3
        # Stage 1 is committed: a second run reads it back without asking the model again.
        again = SynthPipeline(config, store=pipeline.store, show_progress=False)
        assert [t.to_dict() for t in run(again)[0]] == [t.to_dict() for t in tools]
        assert len(server.requests) == calls
        pipeline.store.close()


def test_stage_2_agents_and_tasks_are_validated_and_committed_once(tmp_path: Path) -> None:
    with replay_server(demo_cassette()) as server:
        config = SynthConfig(run_id="stage2", out_dir=tmp_path, llm={"base_url": server.base_url, "model": "replay"},
                             tools={"domains": ["weather"]}, agents={"count": 2, "tools_per_agent": 4},
                             tasks={"per_agent": 3})
        pipeline = SynthPipeline(config, show_progress=False)
        tools, agents, tasks = run(pipeline, tasks=True)
        assert [a.agent_id for a in agents] == ["agent-00000", "agent-00001"]
        assert all(a.origin == "llm" and len(a.tools) == 4 for a in agents)
        assert [t.difficulty for t, _ in tasks[:3]] == ["simple", "moderate", "complex"]
        for task, agent in tasks:
            assert validate_task(task, agent) is task and task.origin == "llm"
        calls = len(server.requests)
        assert calls == 2 + 6  # one persona per agent, one task each
        again = SynthPipeline(config, store=pipeline.store, show_progress=False)
        assert [t.to_dict() for t, _ in run(again, tasks=True)[2]] == [t.to_dict() for t, _ in tasks]
        assert len(server.requests) == calls
        pipeline.store.close()


def test_unusable_replies_fall_back_to_catalogue_personas_and_template_tasks(tmp_path: Path) -> None:
    noise = Cassette.from_dict({"rules": [{"name": "noise", "replies": [{"content": "\x07garbage {not json"}]}]})
    with replay_server(noise) as server:
        config = SynthConfig(run_id="fallback", out_dir=tmp_path, llm={"base_url": server.base_url, "model": "replay"},
                             tools={"domains": ["weather"]}, agents={"count": 1, "tools_per_agent": 3},
                             tasks={"per_agent": 3})
        pipeline = SynthPipeline(config, show_progress=False)
        _, agents, tasks = run(pipeline, tasks=True)
        pipeline.store.close()
    assert agents[0].origin == "catalogue"
    assert [t.origin for t, _ in tasks] == ["template"] * 3
    assert [len(t.rubric.checkpoints) for t, _ in tasks] == [1, 2, 3]  # simple -> complex
    assert all(c.ordered for c in tasks[2][0].rubric.checkpoints)


def test_the_demo_config_parses() -> None:
    config = load_config(Path(__file__).parents[3] / "configs" / "synth-demo.yaml")
    assert config.concurrency == 16 and config.llm_config("tools").temperature == 0.3
    assert config.llm_config("user").base_url == config.llm_config("agent").base_url
