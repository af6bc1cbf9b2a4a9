"""Configuration of a synthesis run (``k2rl synth <config.yaml>``); every default runs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from k2rl.synth.llm import LLMConfig
from k2rl.synth.simulators import OutcomeWeights

ROLES = ("generator", "agent", "user", "tools")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolsSection(_Section):
    fixtures: bool = Field(True, description="include the real tool specs shipped with k2rl.synth")
    files: list[Path] = Field(default_factory=list, description="MCP tools/list or OpenAI tool JSON files")
    domains: list[str] = Field(default_factory=list, description="keep only these domains of the real tools; "
                                                                 "empty = all")
    evolve: dict[str, int] | None = Field(None, description="synthetic tools: n_categories, "
                                                            "domains_per_category, tools_per_domain")
    dedup_threshold: float | None = Field(None, description="embedding-similarity dedup; None = names only")
    coverage_report: bool = Field(True, description="write tool_coverage.png/.json (2-D map of the "
                                                     "tool embeddings coloured by source)")


class AgentsSection(_Section):
    count: int = Field(2, ge=1)
    tools_per_agent: int = Field(3, ge=1)


class TasksSection(_Section):
    per_agent: int = Field(3, ge=0, description="tool-use tasks per agent, simple to complex")
    coding_per_agent: int = Field(0, ge=0, description="coding tasks per agent (run in the sandbox)")


class EpisodesSection(_Section):
    attempts_per_task: int = Field(2, ge=1, description="rejection sampling: rollouts until one passes")
    max_agent_turns: int = Field(6, ge=1)
    max_user_turns: int = Field(2, ge=1)
    outcome_weights: dict[str, float] = Field(default_factory=lambda: {"success": 0.7, "partial_failure": 0.15,
                                                                       "edge_case": 0.15})

    def weights(self) -> OutcomeWeights:
        return OutcomeWeights(**self.outcome_weights)


class JudgeSection(_Section):
    address: str = Field("127.0.0.1:50056", description="judge service host:port")
    llm_judge: bool = Field(True, description="also ask the judge's critic about each success criterion")
    timeout_s: float = Field(120.0, gt=0)
    min_code_pass_rate: float = Field(1.0, ge=0, le=1)


class SandboxSection(_Section):
    address: str | None = Field(None, description="sandbox service host:port; None = no coding tasks")
    timeout_s: float = Field(60.0, gt=0)


class SynthConfig(_Section):
    run_id: str = "synth"
    out_dir: Path = Path(".k2rl/synth")
    state_store: str | None = Field(None, description="state store URL; default: SQLite in out_dir/state.db")
    seed: int = 0
    concurrency: int = Field(8, ge=1, description="episodes in flight")
    llm: dict[str, Any] = Field(default_factory=dict, description="shared LLM endpoint (LLMConfig fields)")
    roles: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-role LLM overrides")
    tools: ToolsSection = ToolsSection()
    agents: AgentsSection = AgentsSection()
    tasks: TasksSection = TasksSection()
    episodes: EpisodesSection = EpisodesSection()
    judge: JudgeSection = JudgeSection()
    sandbox: SandboxSection = SandboxSection()

    def llm_config(self, role: str) -> LLMConfig:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; roles: {ROLES}")
        shared = LLMConfig.from_dict(self.llm)
        return LLMConfig.from_dict(self.roles.get(role, {}), defaults=shared)

    def namespace(self) -> str:
        """The run's state-store namespace (the store allows [A-Za-z0-9_.-])."""
        return "synth." + re.sub(r"[^A-Za-z0-9_.-]", "_", self.run_id)[:58]

    def check(self) -> SynthConfig:
        unknown = sorted(set(self.roles) - set(ROLES))
        if unknown:
            raise ValueError(f"unknown roles {unknown}; roles: {list(ROLES)}")
        for role in ROLES:
            self.llm_config(role)
        self.episodes.weights()
        return self


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> SynthConfig:
    """Read a YAML config (its top level, or its ``synth:`` section); raise ValueError naming the bad key."""
    path = Path(path)
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    data = data.get("synth", data) | (overrides or {})
    try:
        return SynthConfig(**data).check()
    except ValidationError as error:
        raise ValueError(f"{path}: {error}") from None
