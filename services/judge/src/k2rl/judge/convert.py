"""Contract (``k2rl.judge.v1``) <-> domain types. Validation happens here, so a malformed
request fails with INVALID_ARGUMENT naming the exact field before anything is scored."""

from __future__ import annotations

from k2rl.core.errors import InvalidArgument
from k2rl.judge.critic import rubrics as rubric_defaults
from k2rl.judge.critic.compare import TIE, A, B, Comparison
from k2rl.judge.critic.prompt import Turn
from k2rl.judge.critic.rubrics import Rubric, RubricKind
from k2rl.judge.tasks import (
    AgenticTask,
    CryptarithmTask,
    ExactMatchTask,
    Game24Task,
    InstructionTask,
    MathTask,
    MorseTask,
    RubricTask,
    SafetyTask,
    ScoreItem,
    SudokuTask,
    Task,
)
from k2rl.judge.v1 import judge_pb2
from k2rl.judge.verdict import Verdict
from k2rl.judge.verifiers import instruction, tool_use
from k2rl.judge.verifiers.code import CodeTask
from k2rl.judge.verifiers.puzzles import cryptarithm, game24, morse, sudoku
from k2rl.sandbox.v1 import sandbox_pb2

pb = judge_pb2

_REFERENCE_OF_KIND = {
    pb.TASK_KIND_MATH: "math", pb.TASK_KIND_CODE: "code", pb.TASK_KIND_INSTRUCTION_FOLLOWING: "instruction",
    pb.TASK_KIND_RUBRIC: "rubric", pb.TASK_KIND_AGENTIC: "rubric", pb.TASK_KIND_SAFETY: "rubric",
    pb.TASK_KIND_EXACT_MATCH: "exact_match", pb.TASK_KIND_LOGIC_PUZZLE: "puzzle",
}
_RUBRIC_KINDS = {pb.RUBRIC_KIND_CORE: RubricKind.CORE, pb.RUBRIC_KIND_PRESCRIPTIVE: RubricKind.PRESCRIPTIVE,
                 pb.RUBRIC_KIND_TASK_SPECIFIC: RubricKind.TASK_SPECIFIC}
_RUBRIC_KIND_TO_PB = {v: k for k, v in _RUBRIC_KINDS.items()}
_ROLES = {pb.CONVERSATION_ROLE_SYSTEM: "system", pb.CONVERSATION_ROLE_USER: "user",
          pb.CONVERSATION_ROLE_ASSISTANT: "assistant", pb.CONVERSATION_ROLE_TOOL: "tool"}
_PREFERENCE_TO_PB = {A: pb.PREFERENCE_RESPONSE_A, B: pb.PREFERENCE_RESPONSE_B, TIE: pb.PREFERENCE_TIE}


def rubrics_from_pb(messages: list[judge_pb2.Rubric], field: str) -> list[Rubric]:
    """The request's rubrics, or K2's Appendix F set when there are none."""
    if not messages:
        return list(rubric_defaults.DEFAULT_RUBRICS)
    rubrics, seen = [], set()
    for i, m in enumerate(messages):
        if not m.name or not m.criterion:
            raise InvalidArgument("a rubric needs a name and a criterion", field=f"{field}[{i}]")
        if m.kind not in _RUBRIC_KINDS:
            raise InvalidArgument("kind must be CORE, PRESCRIPTIVE or TASK_SPECIFIC", field=f"{field}[{i}].kind")
        if m.name in seen:
            raise InvalidArgument(f"duplicate rubric name {m.name!r}", field=f"{field}[{i}].name")
        if m.weight < 0:
            raise InvalidArgument("weight must be >= 0", field=f"{field}[{i}].weight")
        seen.add(m.name)
        rubrics.append(Rubric(m.name, _RUBRIC_KINDS[m.kind], m.criterion, m.mandatory, m.weight or 1.0))
    return rubrics


def turns_from_pb(messages: list[judge_pb2.ConversationMessage], field: str) -> list[Turn]:
    turns = []
    for i, m in enumerate(messages):
        if m.role not in _ROLES:
            raise InvalidArgument("role must be set", field=f"{field}[{i}].role")
        turns.append(Turn(_ROLES[m.role], m.content))
    return turns


def _puzzle(ref: judge_pb2.PuzzleReference) -> Task:
    which = ref.WhichOneof("puzzle")
    try:
        return _puzzle_of(ref, which)
    except InvalidArgument as error:
        raise InvalidArgument(error.message, field=f"{which}.{error.field}" if which else error.field) from None


def _puzzle_of(ref: judge_pb2.PuzzleReference, which: str | None) -> Task:
    if which == "game24":
        numbers, target = list(ref.game24.numbers), ref.game24.target or 24
        game24.validate_puzzle(numbers, target)
        return Game24Task(numbers, target)
    if which == "sudoku":
        sudoku.parse_puzzle(ref.sudoku.grid)
        return SudokuTask(ref.sudoku.grid)
    if which == "cryptarithm":
        cryptarithm.parse_puzzle(ref.cryptarithm.equation)
        return CryptarithmTask(ref.cryptarithm.equation)
    if which == "morse":
        if not ref.morse.text.strip():
            raise InvalidArgument("the puzzle text is empty", field="text")
        try:
            morse.decode(ref.morse.text) if ref.morse.decode else morse.encode(ref.morse.text)
        except ValueError as error:
            raise InvalidArgument(f"not translatable: {error}", field="text") from None
        return MorseTask(ref.morse.text, ref.morse.decode)
    raise InvalidArgument("set one of game24, sudoku, cryptarithm, morse", field=None)


def _task(spec: judge_pb2.TaskSpec) -> Task:
    kind = spec.kind
    if kind not in _REFERENCE_OF_KIND:
        raise InvalidArgument("kind must be set to a known TaskKind", field="kind")
    want, have = _REFERENCE_OF_KIND[kind], spec.WhichOneof("reference")
    if have != want:
        raise InvalidArgument(
            f"{pb.TaskKind.Name(kind)} needs reference '{want}', got {have or 'none'}", field=want)
    if kind == pb.TASK_KIND_MATH:
        if not spec.math.answer.strip():
            raise InvalidArgument("the reference answer is empty", field="math.answer")
        if spec.math.relative_tolerance < 0:
            raise InvalidArgument("must be >= 0", field="math.relative_tolerance")
        return MathTask(spec.math.answer, spec.math.relative_tolerance)
    if kind == pb.TASK_KIND_CODE:
        code = spec.code
        if code.language == sandbox_pb2.LANGUAGE_UNSPECIFIED:
            raise InvalidArgument("language must be set", field="code.language")
        if not code.tests:
            raise InvalidArgument("a code task needs at least one test", field="code.tests")
        return CodeTask(code.language, list(code.tests), dict(code.files),
                        code.limits if code.HasField("limits") else None, code.partial_credit)
    if kind == pb.TASK_KIND_INSTRUCTION_FOLLOWING:
        if not spec.instruction.constraints:
            raise InvalidArgument("at least one constraint is needed", field="instruction.constraints")
        constraints = []
        for i, c in enumerate(spec.instruction.constraints):
            try:
                constraints.append(instruction.parse_constraint(c.checker, c.arguments_json, c.description))
            except InvalidArgument as error:
                raise InvalidArgument(error.message, field=f"instruction.constraints[{i}].{error.field}") from None
        return InstructionTask(constraints)
    if kind == pb.TASK_KIND_EXACT_MATCH:
        accepted = [a for a in spec.exact_match.accepted_answers if a.strip()]
        if not accepted:
            raise InvalidArgument("at least one non-empty accepted answer", field="exact_match.accepted_answers")
        return ExactMatchTask(accepted, spec.exact_match.case_sensitive)
    if kind == pb.TASK_KIND_LOGIC_PUZZLE:
        try:
            return _puzzle(spec.puzzle)
        except InvalidArgument as error:
            raise InvalidArgument(error.message, field=f"puzzle.{error.field}" if error.field else "puzzle") from None
    rubric = spec.rubric
    if kind == pb.TASK_KIND_AGENTIC:
        checkpoints = []
        for i, c in enumerate(rubric.tool_checkpoints):
            try:
                checkpoints.append(tool_use.parse_checkpoint(c.tool_name, c.arguments_subset_json, c.ordered,
                                                             c.forbidden))
            except InvalidArgument as error:
                raise InvalidArgument(error.message, field=f"rubric.tool_checkpoints[{i}].{error.field}") from None
        state = tool_use.parse_state(dict(rubric.expected_final_state), "rubric.expected_final_state")
        if not checkpoints and not state:
            raise InvalidArgument("an AGENTIC task needs tool_checkpoints or expected_final_state", field="rubric")
        return AgenticTask(checkpoints, state)
    if kind == pb.TASK_KIND_SAFETY:
        if not rubric.rubrics:
            raise InvalidArgument("a SAFETY task needs its rubric (what a safe response does)", field="rubric.rubrics")
        return SafetyTask(rubrics_from_pb(list(rubric.rubrics), "rubric.rubrics"))
    return RubricTask(rubrics_from_pb(list(rubric.rubrics), "rubric.rubrics"), rubric.reference_response)


def score_item_from_pb(request: judge_pb2.ScoreRequest) -> ScoreItem:
    if not request.HasField("task"):
        raise InvalidArgument("the task is required", field="task")
    try:
        task = _task(request.task)
    except InvalidArgument as error:
        raise InvalidArgument(error.message, field=f"task.{error.field}" if error.field else "task") from None
    calls = [tool_use.decode_call(call.name, call.arguments_json)
             for m in request.conversation for call in m.tool_calls]
    return ScoreItem(
        task=task, response=request.response, task_id=request.task.task_id, prompt=request.task.prompt,
        context=turns_from_pb(list(request.conversation), "conversation"), tool_calls=calls,
        final_state=dict(request.final_state), skip_hack_check=request.skip_hack_check,
    )


def score_response_to_pb(verdict: Verdict) -> judge_pb2.ScoreResponse:
    response = judge_pb2.ScoreResponse(
        reward=verdict.reward, passed=verdict.passed, verifier=verdict.verifier, latency_ms=verdict.latency_ms,
        checks=[judge_pb2.CheckResult(name=c.name, passed=c.passed, score=c.value, weight=c.weight, detail=c.detail)
                for c in verdict.checks],
        hack_findings=[judge_pb2.HackFinding(kind=f.kind, detail=f.detail) for f in verdict.hack_findings],
    )
    if verdict.error is not None:
        response.error.code = verdict.error.code
        response.error.message = verdict.error.message
        response.error.retryable = verdict.error.retryable
        response.error.hint = verdict.error.hint
    return response


def compare_response_to_pb(comparison: Comparison, rubrics: list[Rubric], critic: str,
                           latency_ms: float) -> judge_pb2.CompareResponse:
    kinds = {r.name: r.kind for r in rubrics}
    return judge_pb2.CompareResponse(
        preference=_PREFERENCE_TO_PB[comparison.preference],
        probability_a_better=comparison.probability_a_better,
        rationale=comparison.rationale, critic=critic, position_consistent=comparison.position_consistent,
        latency_ms=latency_ms,
        verdicts=[judge_pb2.RubricVerdict(
            rubric_name=o.name, kind=_RUBRIC_KIND_TO_PB[kinds[o.name]], preference=_PREFERENCE_TO_PB[o.preference],
            response_a_violates=o.a_violates, response_b_violates=o.b_violates, rationale=o.rationale,
        ) for o in comparison.rubrics],
    )
