"""Synthetic tools by hierarchical domain evolution (K2 report 3.1.1, Figure 8 left).

An LLM proposes tool *categories*, then *application domains* within each category, then
*tools* for each domain, each tool with a JSON-Schema interface. The LLM is any
``ChatFn`` (OpenAI-format messages in, assistant text out; ``LLMClient.chat`` is one).

Each level asks for one JSON object (``{"categories": [...]}``, ``{"domains": [...]}``,
``{"tools": [...]}``) and reads it out of the reply wherever it is (code fences, prose
around it). Entries that fail validation (tools use exactly the import rules of
``tools.py``) are rejected and counted; when a reply leaves the level short, the model is
told what was wrong and asked again, up to ``max_attempts`` replies per request. Finally
the new tools are deduplicated by name and embedding similarity against the real tools
passed as ``existing`` and against each other (``dedup.py``).

Every system prompt starts with ``EVOLUTION_PROMPT_MARKER`` and a level-specific marker
(``CATEGORY_MARKER``, ``DOMAIN_MARKER``, ``TOOL_MARKER``), so recorded replies can be
matched to them. Given the same replies for the same prompts, a run is deterministic: the
``seed`` only picks the theme hints of the first prompt, and results are ordered as
requested, not as replies arrive.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from k2rl.core.errors import InvalidArgument
from k2rl.synth.dedup import DEFAULT_SIMILARITY_THRESHOLD, DroppedTool, dedup_tools
from k2rl.synth.embedding import TextEmbedder
from k2rl.synth.llm import ChatFn
from k2rl.synth.replies import extract_json_object
from k2rl.synth.tools import TOOL_NAME_PATTERN, ToolSpec, ToolSpecError

EVOLUTION_PROMPT_MARKER = "You design tools for training tool-using AI agents."
CATEGORY_MARKER = "Task: propose tool categories."
DOMAIN_MARKER = "Task: propose application domains."
TOOL_MARKER = "Task: design tools."

# Broad sectors; the seed picks a few as hints so different seeds explore different areas.
THEMES = (
    "personal productivity", "software development", "finance and accounting", "healthcare",
    "education", "e-commerce", "travel and transport", "media and entertainment",
    "science and research", "manufacturing", "real estate", "legal and compliance",
    "human resources", "customer support", "marketing", "agriculture", "energy and utilities",
    "government services", "home automation", "sports and fitness", "data analysis",
    "security and IT operations", "logistics", "telecommunications",
)
THEME_HINTS = 4


@dataclass(frozen=True)
class Category:
    name: str
    description: str


@dataclass(frozen=True)
class Domain:
    name: str
    description: str
    category: str


@dataclass(frozen=True)
class Rejection:
    level: str  # "category", "domain" or "tool"
    where: str  # the request it came from, e.g. "domains of 'Finance'"
    reason: str


@dataclass
class EvolutionResult:
    categories: list[Category] = field(default_factory=list)
    domains: list[Domain] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)  # validated and deduplicated
    rejections: list[Rejection] = field(default_factory=list)
    duplicates: list[DroppedTool] = field(default_factory=list)
    llm_calls: int = 0

    @property
    def rejected(self) -> int:
        return len(self.rejections)


async def evolve_tools(
    chat: ChatFn,
    *,
    n_categories: int,
    domains_per_category: int,
    tools_per_domain: int,
    seed: int,
    existing: Sequence[ToolSpec] = (),
    similarity_threshold: float | None = DEFAULT_SIMILARITY_THRESHOLD,
    embedder: TextEmbedder | None = None,
    max_attempts: int = 3,
) -> EvolutionResult:
    """Evolve categories -> domains -> tools with ``chat`` and return them with the reject count.

    ``existing`` (e.g. the imported real tools) is never returned, but new tools that
    duplicate one of them, by name or by embedding similarity >= ``similarity_threshold``
    (None: names only), are dropped and listed in ``duplicates``. Requests within a level
    are issued concurrently; ``chat`` bounds the real concurrency. A level that stays short
    after ``max_attempts`` replies keeps what it has (possibly nothing) rather than failing.
    """
    for name, value in (("n_categories", n_categories), ("domains_per_category", domains_per_category),
                        ("tools_per_domain", tools_per_domain), ("max_attempts", max_attempts)):
        if value < 1:
            raise InvalidArgument(f"{name} must be >= 1, got {value}", field=name)
    result = EvolutionResult()
    asker = _Asker(chat, max_attempts, result)
    result.categories = await asker.ask(
        level="category", where="categories", key="categories", want=n_categories,
        messages=category_prompt(n_categories, seed), parse=_parse_category)
    per_category = await asyncio.gather(*(
        asker.ask(level="domain", where=f"domains of {category.name!r}", key="domains", want=domains_per_category,
                  messages=domain_prompt(category, domains_per_category),
                  parse=lambda raw, category=category: _parse_domain(raw, category))
        for category in result.categories))
    result.domains = [domain for domains in per_category for domain in domains]
    per_domain = await asyncio.gather(*(
        asker.ask(level="tool", where=f"tools of {domain.name!r}", key="tools", want=tools_per_domain,
                  messages=tool_prompt(domain, tools_per_domain), parse=lambda raw, domain=domain: _parse_tool(raw, domain))
        for domain in result.domains))
    evolved = [tool for tools in per_domain for tool in tools]
    deduped = dedup_tools([*existing, *evolved], threshold=similarity_threshold, embedder=embedder)
    existing_ids = {id(spec) for spec in existing}
    result.tools = [spec for spec in deduped.kept if id(spec) not in existing_ids]
    result.duplicates = deduped.dropped
    return result


# ---------------------------------------------------------------- prompts


def category_prompt(count: int, seed: int) -> list[dict[str, str]]:
    themes = random.Random(seed).sample(THEMES, THEME_HINTS)
    return [
        {"role": "system", "content": f"{EVOLUTION_PROMPT_MARKER} {CATEGORY_MARKER} {_JSON_ONLY}"},
        {"role": "user", "content": (
            f"Propose {count} distinct, broad categories of software tools that an AI assistant could "
            f"call (for example around: {', '.join(themes)}). Each category needs a short name and a "
            'one-sentence description. Answer as {"categories": [{"name": "...", "description": "..."}]}.')},
    ]


def domain_prompt(category: Category, count: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"{EVOLUTION_PROMPT_MARKER} {DOMAIN_MARKER} {_JSON_ONLY}"},
        {"role": "user", "content": (
            f"Category: {category.name} - {category.description}\n"
            f"Propose {count} distinct, concrete application domains within this category, each a "
            "kind of application or service whose tools an assistant would use together. Answer as "
            '{"domains": [{"name": "...", "description": "..."}]}.')},
    ]


def tool_prompt(domain: Domain, count: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": f"{EVOLUTION_PROMPT_MARKER} {TOOL_MARKER} {_JSON_ONLY}"},
        {"role": "user", "content": (
            f"Application domain: {domain.name} - {domain.description} (category: {domain.category})\n"
            f"Design {count} distinct tools (API functions) for this domain. Each tool has a specific "
            f"snake_case name matching {TOOL_NAME_PATTERN.pattern}, a clear description of what it does "
            "and returns, and parameters: a JSON Schema with \"type\": \"object\", \"properties\" "
            "(each with a type and a description) and \"required\" listing only declared properties. "
            'Answer as {"tools": [{"name": "...", "description": "...", "parameters": {...}}]}.')},
    ]


_JSON_ONLY = "Reply with one JSON object and nothing else."


# ---------------------------------------------------------------- parsing


def _parse_category(raw: Any) -> Category:
    name, description = _name_and_description(raw)
    return Category(name, description)


def _parse_domain(raw: Any, category: Category) -> Domain:
    name, description = _name_and_description(raw)
    return Domain(name, description, category.name)


def _parse_tool(raw: Any, domain: Domain) -> ToolSpec:
    if isinstance(raw, dict) and isinstance(raw.get("function"), dict):  # OpenAI tool wrapper
        raw = raw["function"]
    if not isinstance(raw, dict):
        raise ToolSpecError(f"expected a tool object, got {type(raw).__name__}")
    parameters = raw.get("parameters", raw.get("inputSchema"))
    if parameters is None:
        raise ToolSpecError(f"tool {raw.get('name')!r}: missing parameters", field="parameters")
    return ToolSpec(name=raw.get("name"), description=raw.get("description", ""), parameters=parameters,
                    source="synthetic", domain=domain.name, category=domain.category)


def _name_and_description(raw: Any) -> tuple[str, str]:
    if not isinstance(raw, dict):
        raise ValueError(f"expected an object with name and description, got {type(raw).__name__}")
    name, description = raw.get("name"), raw.get("description", "")
    if not isinstance(name, str) or not name.strip():
        raise ValueError("name must be a non-empty string")
    if not isinstance(description, str):
        raise ValueError(f"{name!r}: description must be a string")
    return name.strip(), description.strip()


def _item_key(item: Category | Domain | ToolSpec) -> str:
    return item.name.strip().lower()


class _Asker:
    """Asks for a list of items until enough valid, distinct ones arrive or attempts run out."""

    def __init__(self, chat: ChatFn, max_attempts: int, result: EvolutionResult) -> None:
        self._chat = chat
        self._max_attempts = max_attempts
        self._result = result

    async def ask(self, *, level: str, where: str, key: str, want: int, messages: list[dict[str, str]],
                  parse: Callable[[Any], Any]) -> list:
        items: list = []
        seen: set[str] = set()
        for _ in range(self._max_attempts):
            reply = await self._chat(messages)
            self._result.llm_calls += 1
            problems = self._take_items(reply, level=level, where=where, key=key, parse=parse,
                                        items=items, seen=seen)
            if len(items) >= want:
                return items[:want]
            messages = [*messages, {"role": "assistant", "content": reply},
                        {"role": "user", "content": _retry_request(key, want - len(items), seen, problems)}]
        return items

    def _take_items(self, reply: str, *, level: str, where: str, key: str, parse: Callable[[Any], Any],
                    items: list, seen: set[str]) -> list[str]:
        """Append the valid new items of ``reply``; return the problems found (also recorded)."""
        data = extract_json_object(reply)
        entries = data.get(key) if data is not None else None
        if not isinstance(entries, list):
            return [self._reject(level, where, f"reply has no JSON object with a {key!r} list")]
        problems = []
        for entry in entries:
            try:
                item = parse(entry)
            except ValueError as exc:  # ToolSpecError is a ValueError
                problems.append(self._reject(level, where, str(exc)))
                continue
            if _item_key(item) in seen:
                problems.append(self._reject(level, where, f"duplicate name {item.name!r}"))
                continue
            seen.add(_item_key(item))
            items.append(item)
        return problems

    def _reject(self, level: str, where: str, reason: str) -> str:
        self._result.rejections.append(Rejection(level, where, reason))
        return reason


def _retry_request(key: str, missing: int, seen: set[str], problems: list[str]) -> str:
    parts = [f"I still need {missing} more valid entries."]
    if problems:
        parts.append("Problems with your last answer: " + "; ".join(problems[:5]) + ".")
    if seen:
        parts.append(f"Do not repeat these names: {json.dumps(sorted(seen))}.")
    parts.append(f'Answer with one JSON object {{"{key}": [...]}} containing only new entries.')
    return " ".join(parts)
