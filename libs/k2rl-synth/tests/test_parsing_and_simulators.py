"""Tool-call parsing (K2 tokens, OpenAI JSON, malformed), tool/user simulators, rubric schema."""

from __future__ import annotations

import asyncio
import json

import pytest

from k2rl.models.chat import K2_CHAT_TEMPLATE, render_chat
from k2rl.synth.agents import AgentSpec
from k2rl.synth.outputs import render_k2, sft_record
from k2rl.synth.simulators import (
    OUTCOMES,
    OutcomeWeights,
    ToolCallRequest,
    ToolSimulator,
    UserSimulator,
    apply_state_updates,
    draw_outcome,
)
from k2rl.synth.tasks import Checkpoint, Rubric, SynthTask, TaskError, difficulty_for, validate_task
from k2rl.synth.tools import ToolSpec
from k2rl.synth.trajectories import parse_assistant_turn, parse_text_turn

WEATHER = ToolSpec("get_weather", "Current weather at a place.",
                   {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                    "required": ["city"], "additionalProperties": False}, "openai", "weather")
BOOK = ToolSpec("book_room", "Book a meeting room.",
                {"type": "object", "properties": {"room": {"type": "string"}}, "required": ["room"]}, "mcp", "office")
AGENT = AgentSpec("agent-00000", "Ada", "a helper", "weather", "brief", (WEATHER, BOOK))


def k2_call(call_id: str, arguments: str) -> str:
    return (f"<|tool_call_begin|>{call_id}<|tool_call_argument_begin|>{arguments}<|tool_call_end|>")


# ---- tool-call parsing ------------------------------------------------------------------


def test_k2_token_calls_are_parsed_and_renumbered_over_the_dialog() -> None:
    text = ("Checking. <|tool_calls_section_begin|>" + k2_call("functions.get_weather:0", '{"city": "Lyon"}')
            + k2_call("functions.book_room:1", '{"room": "A1"}') + "<|tool_calls_section_end|>")
    turn = parse_assistant_turn(text, first_index=5)
    assert turn.content == "Checking."
    assert [(c.call_id, c.name, c.arguments) for c in turn.calls] == [
        ("functions.get_weather:5", "get_weather", {"city": "Lyon"}),
        ("functions.book_room:6", "book_room", {"room": "A1"})]
    assert turn.malformed == ()


def test_openai_json_tool_calls_are_parsed() -> None:
    calls = [{"id": "call_x", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]
    turn = parse_assistant_turn("", calls)
    assert [(c.call_id, c.name, c.arguments) for c in turn.calls] == [("functions.get_weather:0", "get_weather",
                                                                        {"city": "Oslo"})]
    message = turn.message()
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"city": "Oslo"}


@pytest.mark.parametrize(("content", "tool_calls", "reason"), [
    ("<|tool_calls_section_begin|>" + k2_call("functions.get_weather:0", '{"city": "Ly') + "<|tool_calls_section_end|>",
     None, "not valid JSON"),
    ("<|tool_calls_section_begin|>" + k2_call("get_weather", '{}') + "<|tool_calls_section_end|>", None, "id"),
    ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{}",
     None, "not terminated"),
    ("", [{"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "[1, 2]"}}], "JSON object"),
    ("", [{"id": "c", "type": "function", "function": {"arguments": "{}"}}], "no function name"),
])
def test_malformed_calls_are_reported_not_dropped(content: str, tool_calls: list | None, reason: str) -> None:
    turn = parse_assistant_turn(content, tool_calls)
    assert turn.calls == ()
    assert len(turn.malformed) == 1
    assert reason in turn.malformed[0].reason
    # The malformed call still appears in the assistant message, so the error reply has a call to answer.
    assert turn.message()["tool_calls"][0]["id"] == turn.malformed[0].call_id


def test_plain_text_has_no_calls() -> None:
    turn = parse_assistant_turn("It is sunny.<|im_end|>")
    assert (turn.content, turn.calls, turn.malformed) == ("It is sunny.", (), ())


def test_sft_record_renders_k2_tool_call_tokens() -> None:
    turn = parse_assistant_turn("", [{"id": "c", "type": "function",
                                      "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}])
    trajectory = {"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "weather?"},
                               turn.message(),
                               {"role": "tool", "tool_call_id": "functions.get_weather:0", "name": "get_weather",
                                "content": "8C"},
                               {"role": "assistant", "content": "8C in Oslo."}],
                  "tools": [WEATHER.to_openai()], "trajectory_id": "t/a0", "task_id": "t", "agent_id": "a",
                  "domain": "weather", "kind": "tool_use"}
    record = sft_record(trajectory, {"reward": 1.0})
    text = render_k2(record)
    assert text == render_chat(K2_CHAT_TEMPLATE, record["messages"], tools=record["tools"])
    assert ("<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>"
            '{"city": "Oslo"}<|tool_call_end|><|tool_calls_section_end|>') in text
    assert "## Return of functions.get_weather:0\n8C" in text
    assert "name" not in record["messages"][3]  # OpenAI chat format: tool messages carry tool_call_id


# ---- simulators -------------------------------------------------------------------------


class ScriptedWorld:
    """A chat function standing in for the world model: echoes the call into state updates."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def __call__(self, messages: list[dict]) -> str:
        prompt = messages[-1]["content"]
        self.prompts.append(prompt)
        args = json.loads(prompt.split("Call: ", 1)[1].split("(", 1)[1].rsplit(")", 1)[0])
        outcome = prompt.split("Outcome to simulate: ", 1)[1].split(".", 1)[0]
        return json.dumps({"result": f"{outcome} for {args}", "state_updates": {"last": args, "n": len(self.prompts),
                                                                                "gone": None}})


def run(coro):
    return asyncio.run(coro)


def test_outcomes_are_seeded_and_follow_the_weights() -> None:
    weights = OutcomeWeights(0.5, 0.25, 0.25)
    first = [draw_outcome(7, i, weights) for i in range(400)]
    assert first == [draw_outcome(7, i, weights) for i in range(400)]
    assert first != [draw_outcome(8, i, weights) for i in range(400)]
    assert set(first) == set(OUTCOMES)
    assert [draw_outcome(1, i, OutcomeWeights(1, 0, 0)) for i in range(20)] == ["success"] * 20
    with pytest.raises(ValueError, match="positive sum"):
        OutcomeWeights(0, 0, 0)


def test_tool_simulator_state_transitions_with_a_fixed_seed() -> None:
    async def episode() -> tuple[list[str], list[dict], ToolSimulator]:
        world = ScriptedWorld()
        sim = ToolSimulator(world, [WEATHER, BOOK], seed=3, initial_state={"gone": 1, "keep": True})
        outcomes, states = [], []
        for call in (ToolCallRequest("c0", "get_weather", {"city": "Lyon"}),
                     ToolCallRequest("c1", "get_weather", {"town": "Lyon"}),  # fails the schema
                     ToolCallRequest("c2", "launch_rocket", {}),  # unknown tool
                     ToolCallRequest("c3", "book_room", {"room": "B2"})):
            result = await sim.execute(call)
            outcomes.append(result.outcome)
            states.append(dict(sim.state))
        return outcomes, states, sim

    outcomes, states, sim = run(episode())
    assert outcomes[1:3] == ["invalid_arguments", "unknown_tool"]
    assert outcomes[0] in OUTCOMES and outcomes[3] in OUTCOMES
    assert outcomes[0] == draw_outcome(3, 0, OutcomeWeights()) and outcomes[3] == draw_outcome(3, 3, OutcomeWeights())
    assert states[0] == {"keep": True, "last": {"city": "Lyon"}, "n": 1}  # "gone" deleted by a null update
    assert states[1] == states[2] == states[0]  # rejected calls leave the state alone
    assert states[3] == {"keep": True, "last": {"room": "B2"}, "n": 2}
    assert (outcomes, states) == run(episode())[:2]  # same seed, same episode

    # A snapshot taken mid-episode continues exactly where it was.
    resumed = ToolSimulator(ScriptedWorld(), [WEATHER, BOOK], seed=0)
    resumed.restore(sim.snapshot())
    assert resumed.state == sim.state and resumed.calls_made == 4 and resumed.seed == 3


def test_tool_simulator_reports_unreadable_world_model_replies() -> None:
    async def garbage(messages: list[dict]) -> str:
        return "sure, it's sunny"

    sim = ToolSimulator(garbage, [WEATHER], seed=0, initial_state={"a": 1})
    result = run(sim.execute(ToolCallRequest("c", "get_weather", {"city": "X"})))
    assert result.outcome == "simulator_error" and sim.state == {"a": 1}


def test_apply_state_updates_does_not_mutate() -> None:
    state = {"a": {"b": 1}}
    assert apply_state_updates(state, {"a": None, "c": 2}) == {"c": 2}
    assert state == {"a": {"b": 1}}


def test_user_simulator_stops_on_done_marker() -> None:
    replies = iter(["hello, weather in Lyon?", "thanks [DONE]"])

    async def chat(messages: list[dict]) -> str:
        assert "style: terse" in messages[0]["content"]
        return next(replies)

    user = UserSimulator(chat, goal="Weather in Lyon.", persona={"name": "pro", "style": "terse"})
    assert run(user.opening()) == "hello, weather in Lyon?"
    assert run(user.reply([{"role": "user", "content": "x"}])) is None


# ---- rubric schema ------------------------------------------------------------------------


def task(**changes) -> SynthTask:
    base = dict(task_id="t", agent_id=AGENT.agent_id, domain="weather", difficulty="simple", kind="tool_use",
                instruction="Weather in Lyon?",
                rubric=Rubric(("reports the weather",), ("get_weather",), (Checkpoint("get_weather", {"city": "Lyon"}),),
                              {"last": {"city": "Lyon"}}))
    return SynthTask(**(base | changes))


def test_rubric_round_trips_through_json() -> None:
    original = task()
    assert SynthTask.from_dict(json.loads(json.dumps(original.to_dict()))) == original
    assert validate_task(original, AGENT) is original


@pytest.mark.parametrize(("changes", "field"), [
    ({"difficulty": "epic"}, "difficulty"),
    ({"kind": "chat"}, "kind"),
    ({"instruction": "  "}, "instruction"),
    ({"rubric": Rubric(())}, "rubric.success_criteria"),
    ({"rubric": Rubric(("ok",), (), (Checkpoint("get_weather", forbidden=True),))}, "rubric.checkpoints"),
    ({"rubric": Rubric(("ok",), (), (Checkpoint("fly"),))}, "rubric.checkpoints[0].tool_name"),
    ({"rubric": Rubric(("ok",), ("fly",), (Checkpoint("get_weather"),))}, "rubric.expected_tool_pattern"),
    ({"rubric": Rubric(("ok",), (), (Checkpoint("get_weather"),), {"x": float("nan")})}, "rubric.expected_final_state"),
    ({"kind": "coding"}, "tests"),
])
def test_invalid_rubrics_are_rejected_with_the_field(changes: dict, field: str) -> None:
    with pytest.raises(TaskError) as caught:
        validate_task(task(**changes), AGENT)
    assert caught.value.field == field


def test_difficulty_goes_from_simple_to_complex() -> None:
    assert [difficulty_for(i, 6) for i in range(6)] == ["simple"] * 2 + ["moderate"] * 2 + ["complex"] * 2
    assert difficulty_for(0, 1) == "simple"


@pytest.mark.parametrize("text", [
    '{"tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}}]}',
    'Calling: {"name": "get_weather", "arguments": {"city": "Oslo"}}',
    "<|tool_calls_section_begin|>" + k2_call("functions.get_weather:0", '{"city": "Oslo"}') + "<|tool_calls_section_end|>",
])
def test_text_turns_carry_calls_as_k2_tokens_or_json(text: str) -> None:
    turn = parse_text_turn(text, first_index=2)
    assert [(c.call_id, c.name, c.arguments) for c in turn.calls] == [("functions.get_weather:2", "get_weather",
                                                                        {"city": "Oslo"})]


def test_text_without_calls_is_a_final_answer() -> None:
    assert parse_text_turn('The answer is {"temp": 8}.').call_count == 0
