"""Stage 1: hierarchical domain evolution against a scripted ChatFn (malformed replies included)."""

from __future__ import annotations

import asyncio
import json

import pytest

from k2rl.core.errors import InvalidArgument
from k2rl.synth.evolution import (
    CATEGORY_MARKER,
    DOMAIN_MARKER,
    TOOL_MARKER,
    category_prompt,
    evolve_tools,
)
from k2rl.synth.llm import LLMClient, LLMConfig
from k2rl.synth.testing import Cassette, replay_server
from k2rl.synth.tools import TOOL_NAME_PATTERN, load_fixture_tools


def schema(*names: str) -> dict:
    return {"type": "object", "properties": {n: {"type": "string", "description": n} for n in names},
            "required": list(names[:1])}


def tool(name: str, description: str, *params: str) -> dict:
    return {"name": name, "description": description, "parameters": schema(*params)}


class ScriptedChat:
    """Answers by prompt level and subject; the n-th reply to one request is script[key][n]."""

    def __init__(self, script: dict[tuple[str, str], list[str]]) -> None:
        self.script = script
        self.calls: list[list[dict]] = []

    async def __call__(self, messages: list[dict]) -> str:
        self.calls.append(messages)
        await asyncio.sleep(0)  # let concurrent requests interleave
        system, first_user = messages[0]["content"], messages[1]["content"]
        level = next(marker for marker in (CATEGORY_MARKER, DOMAIN_MARKER, TOOL_MARKER) if marker in system)
        subject = first_user.split(" - ")[0].split(": ", 1)[-1] if level != CATEGORY_MARKER else ""
        attempt = (len(messages) - 2) // 2
        return self.script[(level, subject)][attempt]


def fenced(data: dict) -> str:
    return f"Sure! Here it is:\n```json\n{json.dumps(data, indent=1)}\n```\nLet me know if you need more."


SCRIPT = {
    (CATEGORY_MARKER, ""): [
        "I think these are good categories: Finance, Travel.",  # no JSON at all -> retry
        fenced({"categories": [{"name": "Finance", "description": "Money tools"},
                               {"name": "finance", "description": "duplicate"},
                               {"description": "nameless"},
                               {"name": "Travel", "description": "Trips"}]}) + " {trailing",
    ],
    (DOMAIN_MARKER, "Finance"): [
        json.dumps({"domains": [{"name": "Personal budgeting", "description": "Track spending"}]}),
    ],
    (DOMAIN_MARKER, "Travel"): [
        '{"domains": [{"name": "Flight booking", "description": "Book flights"}',  # truncated JSON -> retry
        json.dumps({"domains": [{"name": "Flight booking", "description": "Book and change flights"}]}),
    ],
    (TOOL_MARKER, "Personal budgeting"): [
        fenced({"tools": [
            tool("add_expense", "Record an expense with amount and category.", "amount", "category"),
            {"name": "bad tool name", "description": "spaces", "parameters": schema("x")},
            {"name": "list_budgets", "description": "List budgets.", "parameters": {"type": "array"}},
            {"name": "no_params", "description": "Missing schema"},
            tool("add_expense", "Same name again.", "amount"),
        ]}),
        json.dumps({"tools": [
            {"type": "function", "function": tool("monthly_summary",
                                                  "Summarise spending per category for a month.", "month")},
        ]}),
    ],
    (TOOL_MARKER, "Flight booking"): [
        json.dumps({"tools": [
            tool("search_flights", "Search flights between two airports on a date.", "origin", "destination"),
            tool("get_current_weather_now", "Get the current weather at a place: temperature, feels-like "
                 "temperature, humidity, wind and a short condition summary.", "location"),
        ]}),
    ],
}


def evolve(chat, **overrides):
    options = dict(n_categories=2, domains_per_category=1, tools_per_domain=2, seed=7,
                   existing=load_fixture_tools())
    return asyncio.run(evolve_tools(chat, **(options | overrides)))


def test_evolution_builds_the_hierarchy_and_rejects_invalid_entries():
    chat = ScriptedChat(SCRIPT)
    result = evolve(chat)
    assert [c.name for c in result.categories] == ["Finance", "Travel"]
    assert [(d.name, d.category) for d in result.domains] == [("Personal budgeting", "Finance"),
                                                             ("Flight booking", "Travel")]
    assert [(t.name, t.domain, t.category, t.source) for t in result.tools] == [
        ("add_expense", "Personal budgeting", "Finance", "synthetic"),
        ("monthly_summary", "Personal budgeting", "Finance", "synthetic"),
        ("search_flights", "Flight booking", "Travel", "synthetic"),
    ]
    assert all(TOOL_NAME_PATTERN.match(t.name) and t.parameters["type"] == "object" for t in result.tools)
    # rejected: no-JSON reply, duplicate + nameless category, truncated domains reply,
    # four bad tools (name, schema type, missing schema, duplicate name)
    assert result.rejected == 8
    assert sorted({r.level for r in result.rejections}) == ["category", "domain", "tool"]
    assert any("name must match" in r.reason for r in result.rejections)
    assert any("must have \"type\": \"object\"" in r.reason for r in result.rejections)
    # the copy of the real weather tool is dropped as a near-duplicate of the fixture
    (duplicate,) = result.duplicates
    assert (duplicate.tool.name, duplicate.kept_instead.name, duplicate.reason) == (
        "get_current_weather_now", "get_current_weather", "embedding")
    # replies: categories 2, Finance 1, Travel 2, budgeting tools 2, flight tools 1
    assert result.llm_calls == len(chat.calls) == 8


def test_retry_tells_the_model_what_was_wrong():
    chat = ScriptedChat(SCRIPT)
    evolve(chat)
    retry = next(call for call in chat.calls if "Personal budgeting" in call[1]["content"] and len(call) == 4)
    assert retry[2]["role"] == "assistant"
    feedback = retry[3]["content"]
    assert "1 more valid entries" in feedback and "name must match" in feedback and '"add_expense"' in feedback


def test_same_replies_give_the_same_result():
    first, second = evolve(ScriptedChat(SCRIPT)), evolve(ScriptedChat(SCRIPT))
    assert first.tools == second.tools and first.rejections == second.rejections


def test_a_level_that_stays_short_keeps_what_it_has():
    script = dict(SCRIPT)
    script[(TOOL_MARKER, "Flight booking")] = ["no json"] * 2
    result = evolve(ScriptedChat(script), max_attempts=2)
    assert [t.domain for t in result.tools] == ["Personal budgeting", "Personal budgeting"]
    assert sum(r.where == "tools of 'Flight booking'" for r in result.rejections) == 2


def test_seed_varies_the_category_prompt_deterministically():
    assert category_prompt(3, seed=1) == category_prompt(3, seed=1)
    assert category_prompt(3, seed=1) != category_prompt(3, seed=2)


def test_counts_must_be_positive():
    with pytest.raises(InvalidArgument, match="tools_per_domain must be >= 1"):
        evolve(ScriptedChat(SCRIPT), tools_per_domain=0)


def test_evolution_through_the_openai_client_and_the_replay_server():
    """The real client and HTTP round trip; recorded replies matched on the prompt markers."""
    def rule(marker: str, data: dict) -> dict:
        return {"name": marker, "system_contains": marker, "replies": [{"content": fenced(data)}]}

    cassette = Cassette.from_dict({"rules": [
        rule(CATEGORY_MARKER, {"categories": [{"name": "Science", "description": "Research tools"}]}),
        rule(DOMAIN_MARKER, {"domains": [{"name": "Lab inventory", "description": "Track reagents"}]}),
        rule(TOOL_MARKER, {"tools": [
            tool("find_reagent", "Find a reagent in the lab inventory by name or CAS number.", "query"),
            tool("log_reagent_use", "Record that an amount of a reagent was used.", "reagent_id", "amount"),
        ]}),
    ]})

    async def run(base_url: str):
        client = LLMClient(LLMConfig(base_url=base_url, model="replay", max_retries=0))
        try:
            return await evolve_tools(client.chat, n_categories=1, domains_per_category=1, tools_per_domain=2,
                                      seed=0)
        finally:
            await client.close()

    with replay_server(cassette) as server:
        result = asyncio.run(run(server.base_url))
    assert [(t.name, t.domain, t.category) for t in result.tools] == [
        ("find_reagent", "Lab inventory", "Science"), ("log_reagent_use", "Lab inventory", "Science")]
    assert result.rejected == 0
    assert server.hits == {CATEGORY_MARKER: 1, DOMAIN_MARKER: 1, TOOL_MARKER: 1} and server.unmatched == 0
