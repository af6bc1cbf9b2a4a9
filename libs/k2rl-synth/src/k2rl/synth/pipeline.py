"""The synthesis run end to end: tools -> agents and tasks -> judged trajectories -> outputs.

Every finished item is committed to the project's state store (``k2rl.core.store``) under
a key derived from its position (``agent/00003``, ``task/agent-00003/001``,
``result/<task id>``) with a create-only write, before the next one depends on it. Items
are generated deterministically from (seed, index), so a run killed at any point (kill -9
included) and started again reads what is there, does only what is missing, and never
writes an item twice. Output files are rewritten from the store at the end of each run
(atomically), so they never hold duplicates either.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.store import StateStore, VersionConflict, encode_json, open_store
from k2rl.judge.v1 import judge_pb2_grpc
from k2rl.synth.agents import AgentSpec, generate_agent
from k2rl.synth.config import SynthConfig
from k2rl.synth.coverage import write_coverage_report
from k2rl.synth.dedup import dedup_tools
from k2rl.synth.evolution import evolve_tools
from k2rl.synth.llm import LLMClient, LLMConfig, LLMError
from k2rl.synth.outputs import (
    RL_ENV_FILE,
    SFT_FILE,
    SFT_K2_FILE,
    render_k2,
    rl_environment_record,
    sft_record,
    write_jsonl,
)
from k2rl.synth.quality import QualityFilter, pass_rates
from k2rl.synth.tasks import SynthTask, difficulty_for, generate_task
from k2rl.synth.tools import ToolRepository, ToolSpec, load_fixture_tools, load_tool_file
from k2rl.synth.trajectories import EpisodeLimits, EpisodeModels, SandboxRunner, run_episode

logger = logging.getLogger(__name__)
T = TypeVar("T")

TOOLS_KEY = "stage1/tools"
REPORT_FILE = "report.json"


@dataclass
class RunSummary:
    tools: int = 0
    agents: int = 0
    tasks: int = 0
    tasks_done: int = 0  # tasks with a committed result
    tasks_failed: int = 0  # not committed this run (endpoint errors); a rerun retries them
    trajectories: int = 0
    kept: int = 0
    pass_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class SynthPipeline:
    """One run of ``config``; state in ``store`` (default: the config's state store)."""

    def __init__(self, config: SynthConfig, *, store: StateStore | None = None, show_progress: bool = True) -> None:
        self.config = config
        self.out_dir = config.out_dir
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.store = store or open_store(config.state_store, namespace=config.namespace(),
                                         default_sqlite_path=self.out_dir / "state.db")
        self._clients: dict[LLMConfig, LLMClient] = {}
        self._progress = Progress(TextColumn("{task.description:<12}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                  console=Console(stderr=True), disable=not show_progress)
        self.summary = RunSummary()

    # ---- plumbing --------------------------------------------------------------------

    def client(self, role: str) -> LLMClient:
        """One client per distinct endpoint config, so roles sharing an endpoint share its concurrency."""
        config = self.config.llm_config(role)
        if config not in self._clients:
            self._clients[config] = LLMClient(config, seed=self.config.seed)
        return self._clients[config]

    def _load(self, key: str) -> Any:
        found = self.store.get(key)
        return None if found is None else found.json()

    def _commit(self, key: str, value: Any) -> None:
        """Create-only: an item is written once; a concurrent or earlier writer wins."""
        try:
            self.store.compare_and_set(key, encode_json(value), 0)
        except VersionConflict:
            logger.info("%s was already committed; keeping the stored one", key)

    async def _each(self, label: str, items: list[T], work: Callable[[T], Awaitable[Any]], limit: int,
                    describe: Callable[[], str] = str) -> list[Any]:
        """Run ``work`` on every item, ``limit`` at a time, with a progress bar; results in order."""
        bar = self._progress.add_task(label, total=len(items), info="")
        slots = asyncio.Semaphore(limit)

        async def one(item: T) -> Any:
            async with slots:
                result = await work(item)
            self._progress.update(bar, advance=1, info=describe())
            return result

        return await asyncio.gather(*(one(item) for item in items))

    # ---- stages ----------------------------------------------------------------------

    async def stage_tools(self) -> list[ToolSpec]:
        stored = self._load(TOOLS_KEY)
        if stored is None:
            built = await self._build_tools()
            if not built:
                raise ValueError("stage 1 produced no tools: check tools.fixtures / tools.files / tools.domains")
            self._commit(TOOLS_KEY, [tool.to_dict() for tool in built])
            stored = self._load(TOOLS_KEY)
        return [ToolSpec.from_dict(item) for item in stored]

    async def _build_tools(self) -> list[ToolSpec]:
        section = self.config.tools
        specs: list[ToolSpec] = load_fixture_tools() if section.fixtures else []
        for path in section.files:
            specs += load_tool_file(path)
        if section.domains:
            specs = [spec for spec in specs if spec.domain in section.domains]
        if section.dedup_threshold is not None:
            specs = dedup_tools(specs, threshold=section.dedup_threshold).kept
        if section.evolve:
            evolved = await evolve_tools(self.client("generator").chat, seed=self.config.seed, existing=specs,
                                         similarity_threshold=section.dedup_threshold, **section.evolve)
            logger.info("evolved %d synthetic tools (%d rejected, %d duplicates dropped)", len(evolved.tools),
                        evolved.rejected, len(evolved.duplicates))
            specs += evolved.tools
        repository = ToolRepository()
        repository.extend(specs)
        return repository.list()

    async def stage_agents(self, tools: list[ToolSpec]) -> list[AgentSpec]:
        section = self.config.agents
        chat = self.client("generator").chat

        async def agent(index: int) -> AgentSpec:
            key = f"agent/{index:05d}"
            if self._load(key) is None:
                built = await generate_agent(chat, tools, index=index, tools_per_agent=section.tools_per_agent,
                                             seed=self.config.seed)
                self._commit(key, built.to_dict())
            return AgentSpec.from_dict(self._load(key))

        return await self._each("agents", list(range(section.count)), agent, self.config.concurrency)

    async def stage_tasks(self, agents: list[AgentSpec]) -> list[tuple[SynthTask, AgentSpec]]:
        section = self.config.tasks
        chat = self.client("generator").chat
        plan = [(agent, j, "tool_use", difficulty_for(j, section.per_agent)) for agent in agents
                for j in range(section.per_agent)]
        if self.config.sandbox.address:
            plan += [(agent, section.per_agent + j, "coding", "moderate") for agent in agents
                     for j in range(section.coding_per_agent)]

        async def task(entry: tuple[AgentSpec, int, str, str]) -> tuple[SynthTask, AgentSpec]:
            agent, j, kind, difficulty = entry
            key = f"task/{agent.agent_id}/{j:03d}"
            if self._load(key) is None:
                built = await generate_task(chat, agent, task_id=f"{agent.agent_id}-t{j:03d}", difficulty=difficulty,
                                            kind=kind, seed=self.config.seed)
                self._commit(key, built.to_dict())
            return SynthTask.from_dict(self._load(key)), agent

        return await self._each("tasks", plan, task, self.config.concurrency)

    async def stage_trajectories(self, tasks: list[tuple[SynthTask, AgentSpec]], judge: Any,
                                 sandbox: SandboxRunner | None) -> None:
        episodes = self.config.episodes
        models = EpisodeModels(agent=self.client("agent"), user=self.client("user").chat,
                               tools=self.client("tools").chat, outcome_weights=episodes.weights(), sandbox=sandbox)
        quality = QualityFilter(judge, llm_judge=self.config.judge.llm_judge, timeout_s=self.config.judge.timeout_s,
                                min_code_pass_rate=self.config.judge.min_code_pass_rate)
        limits = EpisodeLimits(episodes.max_agent_turns, episodes.max_user_turns)

        async def rollout(entry: tuple[SynthTask, AgentSpec]) -> None:
            task, agent = entry
            key = f"result/{task.task_id}"
            if self._load(key) is not None:
                return
            attempts = []
            try:
                for attempt in range(episodes.attempts_per_task):
                    trajectory = await run_episode(task, agent, models, seed=self.config.seed, attempt=attempt,
                                                   limits=limits)
                    judgement = await quality.judge(task, trajectory)
                    attempts.append({"trajectory": trajectory.to_dict(), "judgement": judgement.to_dict()})
                    if judgement.passed:
                        break
            except (LLMError, grpc.RpcError) as error:
                self.summary.tasks_failed += 1
                logger.warning("task %s not finished (a rerun retries it): %s", task.task_id, _describe(error))
                return
            kept = attempts[-1]["trajectory"]["trajectory_id"] if attempts[-1]["judgement"]["passed"] else None
            self._commit(key, {"task_id": task.task_id, "domain": task.domain, "attempts": attempts, "kept": kept})
            progress["rolled out"] += len(attempts)
            progress["kept"] += kept is not None

        progress = {"rolled out": 0, "kept": 0}
        usage = self.client("agent").usage

        def describe() -> str:
            return (f"{progress['rolled out']} rolled out this run, {progress['kept']} kept, "
                    f"{self.summary.tasks_failed} failed, agent {usage.total_tokens} tokens")

        await self._each("trajectories", tasks, rollout, self.config.concurrency, describe)

    # ---- outputs ---------------------------------------------------------------------

    def results(self) -> Iterator[dict[str, Any]]:
        for _, versioned in self.store.scan("result/"):
            yield versioned.json()

    def write_outputs(self, tools: list[ToolSpec], tasks: Iterable[tuple[SynthTask, AgentSpec]]) -> dict[str, str]:
        sft_rows = []
        judgements = []
        for result in self.results():
            for attempt in result["attempts"]:
                judgements.append(attempt["judgement"])
                if attempt["trajectory"]["trajectory_id"] == result["kept"]:
                    sft_rows.append(sft_record(attempt["trajectory"], attempt["judgement"]))
        paths = {"sft": self.out_dir / SFT_FILE, "sft_k2": self.out_dir / SFT_K2_FILE,
                 "rl_environment": self.out_dir / RL_ENV_FILE, "report": self.out_dir / REPORT_FILE}
        write_jsonl(paths["sft"], sft_rows)
        write_jsonl(paths["sft_k2"], ({"text": render_k2(row), "metadata": row["metadata"]} for row in sft_rows))
        weights = self.config.episodes.weights()
        write_jsonl(paths["rl_environment"], (rl_environment_record(task, agent, weights) for task, agent in tasks))
        self.summary.trajectories = len(judgements)
        self.summary.kept = len(sft_rows)
        self.summary.tasks_done = sum(1 for _ in self.store.scan("result/"))
        self.summary.pass_rates = pass_rates(judgements)
        self.summary.usage = {config.model + "@" + config.base_url: client.usage.as_dict()
                              for config, client in self._clients.items()}
        if self.config.tools.coverage_report:
            coverage = write_coverage_report(tools, self.out_dir, seed=self.config.seed)
            paths["tool_coverage_png"], paths["tool_coverage_json"] = coverage.png_path, coverage.summary_path
        self.summary.outputs = {name: str(path) for name, path in paths.items()}
        paths["report"].write_text(json.dumps(self.summary.to_dict(), indent=2, sort_keys=True) + "\n")
        return self.summary.outputs

    # ---- the run ---------------------------------------------------------------------

    async def run(self) -> RunSummary:
        with self._progress, self._services() as (judge, sandbox):
            tools = await self.stage_tools()
            agents = await self.stage_agents(tools)
            tasks = await self.stage_tasks(agents)
            self.summary.tools, self.summary.agents, self.summary.tasks = len(tools), len(agents), len(tasks)
            await self.stage_trajectories(tasks, judge, sandbox)
            self.write_outputs(tools, tasks)
        await self.close_clients()
        return self.summary

    async def close_clients(self) -> None:
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    @contextmanager
    def _services(self) -> Iterator[tuple[Any, SandboxRunner | None]]:
        options = ClientOptions(default_timeout_s=self.config.judge.timeout_s)
        judge = create_stub(judge_pb2_grpc.JudgeServiceStub, self.config.judge.address, options)
        sandbox_stub = None
        if self.config.sandbox.address:
            from k2rl.sandbox.v1 import sandbox_pb2_grpc

            sandbox_stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, self.config.sandbox.address, options)
        try:
            runner = SandboxRunner(sandbox_stub, timeout_s=self.config.sandbox.timeout_s) if sandbox_stub else None
            yield judge, runner
        finally:
            close_stub(judge)
            if sandbox_stub is not None:
                close_stub(sandbox_stub)


def _describe(error: Exception) -> str:
    if isinstance(error, grpc.RpcError):
        return f"{error.code().name}: {error.details()}"  # type: ignore[attr-defined]
    return str(error)


def run_pipeline(config: SynthConfig, *, show_progress: bool = True) -> RunSummary:
    pipeline = SynthPipeline(config, show_progress=show_progress)
    try:
        return asyncio.run(pipeline.run())
    finally:
        pipeline.store.close()
