"""Multi-turn tool use (K2 sections 3.1.1 and 3.3.4): synthesized tasks, simulated tools.

The dataset is the ``rl_environment.jsonl`` that ``k2rl synth`` writes: each row a task with
its typed rubric, the agent (system prompt and tool schemas) and the tool simulator's
settings. An episode renders the agent's system prompt, tool declarations and the user's
request with K2's chat template; each model turn is parsed for tool calls (K2 tool-call
tokens, or OpenAI-style JSON in the text); calls run against ``k2rl.synth``'s tool
simulator (an LLM world model with per-episode state and seeded success / partial failure /
edge-case outcomes) and the results come back as the next observation, in K2's tool-result
format. A turn without calls (or the ``max_turns``-th turn) ends the episode: the judge
checks the rubric's tool-call checkpoints and expected final state (AGENTIC) and its
reward is the episode's reward. Coding tasks are scored for real: the final program runs
against the task's tests in the sandbox (the judge's CODE verifier, partial credit).

Options: ``tool_simulator_base_url`` and ``tool_simulator_model`` (an OpenAI-compatible
endpoint for the world model; required), ``tool_simulator_api_key_env``, ``max_turns``
(default 4; set it to the run's max turns), ``judge_timeout_s``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from k2rl.controller.environments.base import Environment, StepResult, Task
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc
from k2rl.models.chat import K2_CHAT_TEMPLATE, render_chat
from k2rl.sandbox.v1 import sandbox_pb2
from k2rl.synth.agents import AgentSpec
from k2rl.synth.llm import LLMClient, LLMConfig
from k2rl.synth.quality import agentic_item
from k2rl.synth.simulators import OutcomeWeights, ToolCallRequest, ToolSimulator
from k2rl.synth.tasks import SynthTask, validate_task
from k2rl.synth.trajectories import Trajectory, episode_seed, parse_text_turn


@dataclass(frozen=True)
class ToolUseOptions:
    simulator: LLMConfig
    max_turns: int = 4
    judge_timeout_s: float = 60.0

    @classmethod
    def from_options(cls, options: dict[str, str]) -> ToolUseOptions:
        unknown = sorted(set(options) - {"tool_simulator_base_url", "tool_simulator_model",
                                         "tool_simulator_api_key_env", "max_turns", "judge_timeout_s"})
        if unknown:
            raise ValueError(f"unknown tool_use options {unknown}")
        if not options.get("tool_simulator_base_url") or not options.get("tool_simulator_model"):
            raise ValueError("the tool_use environment needs tool_simulator_base_url and tool_simulator_model "
                             "(an OpenAI-compatible endpoint for the tool simulator)")
        simulator = LLMConfig(base_url=options["tool_simulator_base_url"], model=options["tool_simulator_model"],
                              api_key_env=options.get("tool_simulator_api_key_env", "OPENAI_API_KEY"),
                              temperature=0.3, max_concurrency=1)
        max_turns = int(options.get("max_turns", 4))
        if max_turns < 1:
            raise ValueError(f"max_turns must be >= 1, got {max_turns}")
        return cls(simulator, max_turns, float(options.get("judge_timeout_s", 60)))


def code_item(task: SynthTask, trajectory: Trajectory) -> judge_pb2.ScoreRequest:
    """Coding tasks are judged for real: the final answer's program against the task's tests in the sandbox."""
    tests = [sandbox_pb2.TestCase(name=t.name, stdin=t.stdin.encode(), expected_stdout=t.expected_stdout.encode())
             for t in task.tests]
    return judge_pb2.ScoreRequest(
        task=judge_pb2.TaskSpec(kind=judge_pb2.TASK_KIND_CODE, task_id=task.task_id, prompt=task.instruction,
                                code=judge_pb2.CodeReference(language=sandbox_pb2.LANGUAGE_PYTHON, tests=tests,
                                                             partial_credit=True)),
        response=trajectory.final_response())


def check_tool_use_row(reference: dict[str, Any], where: str) -> None:
    """Raise ValueError unless a dataset row holds a valid task for its agent."""
    try:
        agent = AgentSpec.from_dict(reference["agent"])
        validate_task(SynthTask.from_dict(reference["task"]), agent)
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"{where}: not a k2rl synth rl_environment row: {error}") from None


class ToolUseEnvironment(Environment):
    name = "tool_use"
    keeps_special_tokens = True  # K2 tool-call markers are how the model calls tools

    def __init__(self, judge: judge_pb2_grpc.JudgeServiceStub, options: ToolUseOptions) -> None:
        super().__init__()
        self._judge = judge
        self._options = options
        self.messages: list[dict[str, Any]] = []
        self.simulator_state: dict[str, Any] = {}

    # ---- the task's parts, rebuilt from the row (cheap, and survives restore) -------------

    def _agent(self, task: Task) -> AgentSpec:
        return AgentSpec.from_dict(task.reference["agent"])

    def _task(self, task: Task) -> SynthTask:
        return SynthTask.from_dict(task.reference["task"])

    def _simulator(self, task: Task, chat: Any) -> ToolSimulator:
        """The episode's tool simulator, at the state the last step left it in."""
        weights = OutcomeWeights(**task.reference.get("simulator", {}).get("outcome_weights", {}))
        simulator = ToolSimulator(chat, self._agent(task).tools, seed=episode_seed(0, task.task_id, 0),
                                  initial_state=self._task(task).initial_state, weights=weights)
        if self.simulator_state:
            simulator.restore(self.simulator_state)
        return simulator

    # ---- Environment ---------------------------------------------------------------------

    def reset(self, task: Task) -> str:
        self.messages = [{"role": "system", "content": self._agent(task).system_prompt()},
                         {"role": "user", "content": task.prompt}]
        self.simulator_state = {}
        return super().reset(task)

    def format_prompt(self, task: Task) -> str:
        return render_chat(K2_CHAT_TEMPLATE, self.messages, tools=self._agent(task).openai_tools(),
                           add_generation_prompt=True)

    def evaluate(self, task: Task, action: str) -> StepResult:
        turn = parse_text_turn(action, first_index=sum(len(m.get("tool_calls", [])) for m in self.messages))
        self.messages.append(turn.message())
        if not turn.call_count or self.turns_taken >= self._options.max_turns:
            return self._score(task)
        results = asyncio.run(self._run_calls(task, turn))
        self.messages += results
        observation = "".join(f"<|im_system|>tool<|im_middle|>## Return of {m['tool_call_id']}\n{m['content']}"
                              "<|im_end|>" for m in results) + "<|im_assistant|>assistant<|im_middle|>"
        return StepResult(observation, 0.0, False, {"tool_calls": turn.call_count})

    async def _run_calls(self, task: Task, turn: Any) -> list[dict[str, Any]]:
        client = LLMClient(self._options.simulator)  # owned by this step's event loop
        simulator = self._simulator(task, client.chat)
        try:
            results = []
            for call in turn.calls:
                result = await simulator.execute(ToolCallRequest(call.call_id, call.name, call.arguments))
                results.append({"role": "tool", "tool_call_id": call.call_id, "content": result.content})
            for bad in turn.malformed:
                results.append({"role": "tool", "tool_call_id": bad.call_id,
                                "content": f"error: malformed tool call: {bad.reason}"})
        finally:
            await client.close()
        self.simulator_state = simulator.snapshot()
        return results

    def _score(self, task: Task) -> StepResult:
        synth_task = self._task(task)
        trajectory = Trajectory(task.task_id, task.task_id, synth_task.agent_id, synth_task.domain, synth_task.kind,
                                0, 0, {}, messages=self.messages,
                                final_state=self.simulator_state.get("state", synth_task.initial_state))
        request = code_item(synth_task, trajectory) if synth_task.kind == "coding" else agentic_item(
            synth_task, trajectory)
        response = self._judge.Score(request, timeout=self._options.judge_timeout_s)
        info: dict[str, Any] = {"passed": response.passed, "verifier": response.verifier}
        if response.HasField("error") and response.error.code:
            info["error"] = f"{response.error.code}: {response.error.message}"
        return StepResult("", response.reward, True, info)

    def snapshot(self) -> dict[str, Any]:
        return super().snapshot() | {"messages": self.messages, "simulator": self.simulator_state}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.messages = list(state.get("messages", []))
        self.simulator_state = dict(state.get("simulator", {}))

