"""Stage 2a: agents, each a system prompt (persona, expertise, behaviour) plus a tool subset.

K2 report 3.1.1: "thousands of distinct agents ... by synthesizing various system prompts
and equipping them with different combinations of tools from our repository". The tool
subset is sampled first (mostly from one domain, so the agent is coherent); the persona is
then written by the LLM for those tools. A reply that is not the requested JSON falls back
to a persona from a small catalogue (recorded as ``origin="catalogue"``) so a weak model
still yields usable agents.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from k2rl.synth.llm import ChatFn
from k2rl.synth.replies import extract_json_object
from k2rl.synth.tools import ToolSpec

PERSONA_FIELDS = ("name", "persona", "expertise", "behaviour")

# Used when the LLM's persona reply is unusable: plain, domain-neutral assistants.
CATALOGUE: tuple[dict[str, str], ...] = (
    {"name": "Ada", "persona": "a calm, precise operations assistant",
     "expertise": "getting concrete tasks done with the available tools",
     "behaviour": "checks inputs before acting, calls tools only when needed, reports results briefly"},
    {"name": "Bo", "persona": "a friendly concierge", "expertise": "planning and everyday logistics",
     "behaviour": "asks one clarifying question when the request is ambiguous, then acts"},
    {"name": "Cy", "persona": "a meticulous analyst", "expertise": "looking things up and comparing options",
     "behaviour": "verifies tool results and says plainly when a tool failed"},
)

AGENT_SYSTEM = "You design assistant personas for tool-use training data. Reply with JSON only."


@dataclass(frozen=True)
class AgentSpec:
    agent_id: str
    name: str
    persona: str
    expertise: str
    behaviour: str
    tools: tuple[ToolSpec, ...]
    origin: str = "llm"  # "llm" or "catalogue"

    @property
    def domain(self) -> str:
        """The most common domain of the agent's tools."""
        domains = [tool.domain for tool in self.tools]
        return max(sorted(set(domains)), key=domains.count) if domains else ""

    def tool_names(self) -> list[str]:
        return [tool.name for tool in self.tools]

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.to_openai() for tool in self.tools]

    def system_prompt(self) -> str:
        return (f"You are {self.name}, {self.persona}. Expertise: {self.expertise}. "
                f"Behaviour: {self.behaviour}. Use the provided tools when they help; "
                "after the tools answer, give the user a short final reply.")

    def to_dict(self) -> dict[str, Any]:
        return {"agent_id": self.agent_id, "name": self.name, "persona": self.persona,
                "expertise": self.expertise, "behaviour": self.behaviour, "origin": self.origin,
                "tools": [tool.to_dict() for tool in self.tools]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentSpec:
        return cls(data["agent_id"], data["name"], data["persona"], data["expertise"], data["behaviour"],
                   tuple(ToolSpec.from_dict(t) for t in data["tools"]), data.get("origin", "llm"))


def sample_tool_subset(tools: Sequence[ToolSpec], size: int, rng: random.Random) -> tuple[ToolSpec, ...]:
    """``size`` tools, drawn from one randomly chosen domain first, topped up from the rest."""
    if not tools:
        raise ValueError("the tool repository is empty; stage 2 needs tools")
    by_domain: dict[str, list[ToolSpec]] = {}
    for tool in tools:
        by_domain.setdefault(tool.domain, []).append(tool)
    home = rng.choice(sorted(by_domain))
    own = list(by_domain[home])
    rng.shuffle(own)
    others = [tool for tool in tools if tool.domain != home]
    rng.shuffle(others)
    return tuple((own + others)[:size])


def persona_prompt(tools: Sequence[ToolSpec]) -> list[dict[str, str]]:
    listing = "\n".join(f"- {tool.name}: {tool.description}" for tool in tools)
    return [{"role": "system", "content": AGENT_SYSTEM},
            {"role": "user", "content": f"Tools:\n{listing}\n\nWrite a persona for an assistant using these "
                                        'tools as JSON: {"name": ..., "persona": ..., "expertise": ..., '
                                        '"behaviour": ...}'}]


def parse_persona(reply: str) -> dict[str, str] | None:
    data = extract_json_object(reply)
    if data is None:
        return None
    fields = {key: data.get(key) for key in PERSONA_FIELDS}
    if not all(isinstance(value, str) and value.strip() for value in fields.values()):
        return None
    return {key: value.strip()[:300] for key, value in fields.items()}  # type: ignore[union-attr]


async def generate_agent(chat: ChatFn, tools: Sequence[ToolSpec], *, index: int, tools_per_agent: int,
                         seed: int) -> AgentSpec:
    """Agent number ``index``: the same tool subset for the same (seed, index), always."""
    rng = random.Random(f"agent/{seed}/{index}")
    subset = sample_tool_subset(tools, tools_per_agent, rng)
    persona = parse_persona(await chat(persona_prompt(subset)))
    origin = "llm"
    if persona is None:
        persona, origin = CATALOGUE[index % len(CATALOGUE)], "catalogue"
    return AgentSpec(f"agent-{index:05d}", persona["name"], persona["persona"], persona["expertise"],
                     persona["behaviour"], subset, origin)
