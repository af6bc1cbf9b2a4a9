from k2rl.common.v1 import common_pb2 as _common_pb2
from k2rl.sandbox.v1 import sandbox_pb2 as _sandbox_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_KIND_UNSPECIFIED: _ClassVar[TaskKind]
    TASK_KIND_MATH: _ClassVar[TaskKind]
    TASK_KIND_CODE: _ClassVar[TaskKind]
    TASK_KIND_INSTRUCTION_FOLLOWING: _ClassVar[TaskKind]
    TASK_KIND_RUBRIC: _ClassVar[TaskKind]
    TASK_KIND_AGENTIC: _ClassVar[TaskKind]
    TASK_KIND_SAFETY: _ClassVar[TaskKind]
    TASK_KIND_EXACT_MATCH: _ClassVar[TaskKind]
    TASK_KIND_LOGIC_PUZZLE: _ClassVar[TaskKind]

class RubricKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUBRIC_KIND_UNSPECIFIED: _ClassVar[RubricKind]
    RUBRIC_KIND_CORE: _ClassVar[RubricKind]
    RUBRIC_KIND_PRESCRIPTIVE: _ClassVar[RubricKind]
    RUBRIC_KIND_TASK_SPECIFIC: _ClassVar[RubricKind]

class Preference(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PREFERENCE_UNSPECIFIED: _ClassVar[Preference]
    PREFERENCE_RESPONSE_A: _ClassVar[Preference]
    PREFERENCE_RESPONSE_B: _ClassVar[Preference]
    PREFERENCE_TIE: _ClassVar[Preference]

class ConversationRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONVERSATION_ROLE_UNSPECIFIED: _ClassVar[ConversationRole]
    CONVERSATION_ROLE_SYSTEM: _ClassVar[ConversationRole]
    CONVERSATION_ROLE_USER: _ClassVar[ConversationRole]
    CONVERSATION_ROLE_ASSISTANT: _ClassVar[ConversationRole]
    CONVERSATION_ROLE_TOOL: _ClassVar[ConversationRole]
TASK_KIND_UNSPECIFIED: TaskKind
TASK_KIND_MATH: TaskKind
TASK_KIND_CODE: TaskKind
TASK_KIND_INSTRUCTION_FOLLOWING: TaskKind
TASK_KIND_RUBRIC: TaskKind
TASK_KIND_AGENTIC: TaskKind
TASK_KIND_SAFETY: TaskKind
TASK_KIND_EXACT_MATCH: TaskKind
TASK_KIND_LOGIC_PUZZLE: TaskKind
RUBRIC_KIND_UNSPECIFIED: RubricKind
RUBRIC_KIND_CORE: RubricKind
RUBRIC_KIND_PRESCRIPTIVE: RubricKind
RUBRIC_KIND_TASK_SPECIFIC: RubricKind
PREFERENCE_UNSPECIFIED: Preference
PREFERENCE_RESPONSE_A: Preference
PREFERENCE_RESPONSE_B: Preference
PREFERENCE_TIE: Preference
CONVERSATION_ROLE_UNSPECIFIED: ConversationRole
CONVERSATION_ROLE_SYSTEM: ConversationRole
CONVERSATION_ROLE_USER: ConversationRole
CONVERSATION_ROLE_ASSISTANT: ConversationRole
CONVERSATION_ROLE_TOOL: ConversationRole

class ConversationMessage(_message.Message):
    __slots__ = ("role", "content", "tool_name", "tool_calls")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    role: ConversationRole
    content: str
    tool_name: str
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCall]
    def __init__(self, role: _Optional[_Union[ConversationRole, str]] = ..., content: _Optional[str] = ..., tool_name: _Optional[str] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCall, _Mapping]]] = ...) -> None: ...

class ToolCall(_message.Message):
    __slots__ = ("name", "arguments_json")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments_json: str
    def __init__(self, name: _Optional[str] = ..., arguments_json: _Optional[str] = ...) -> None: ...

class ToolCallCheckpoint(_message.Message):
    __slots__ = ("tool_name", "arguments_subset_json", "ordered", "forbidden")
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_SUBSET_JSON_FIELD_NUMBER: _ClassVar[int]
    ORDERED_FIELD_NUMBER: _ClassVar[int]
    FORBIDDEN_FIELD_NUMBER: _ClassVar[int]
    tool_name: str
    arguments_subset_json: str
    ordered: bool
    forbidden: bool
    def __init__(self, tool_name: _Optional[str] = ..., arguments_subset_json: _Optional[str] = ..., ordered: _Optional[bool] = ..., forbidden: _Optional[bool] = ...) -> None: ...

class Rubric(_message.Message):
    __slots__ = ("name", "kind", "criterion", "mandatory", "weight")
    NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CRITERION_FIELD_NUMBER: _ClassVar[int]
    MANDATORY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    name: str
    kind: RubricKind
    criterion: str
    mandatory: bool
    weight: float
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[RubricKind, str]] = ..., criterion: _Optional[str] = ..., mandatory: _Optional[bool] = ..., weight: _Optional[float] = ...) -> None: ...

class MathReference(_message.Message):
    __slots__ = ("answer", "relative_tolerance")
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    RELATIVE_TOLERANCE_FIELD_NUMBER: _ClassVar[int]
    answer: str
    relative_tolerance: float
    def __init__(self, answer: _Optional[str] = ..., relative_tolerance: _Optional[float] = ...) -> None: ...

class CodeReference(_message.Message):
    __slots__ = ("language", "tests", "files", "limits", "partial_credit")
    class FilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TESTS_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    LIMITS_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_CREDIT_FIELD_NUMBER: _ClassVar[int]
    language: _sandbox_pb2.Language
    tests: _containers.RepeatedCompositeFieldContainer[_sandbox_pb2.TestCase]
    files: _containers.ScalarMap[str, bytes]
    limits: _sandbox_pb2.ResourceLimits
    partial_credit: bool
    def __init__(self, language: _Optional[_Union[_sandbox_pb2.Language, str]] = ..., tests: _Optional[_Iterable[_Union[_sandbox_pb2.TestCase, _Mapping]]] = ..., files: _Optional[_Mapping[str, bytes]] = ..., limits: _Optional[_Union[_sandbox_pb2.ResourceLimits, _Mapping]] = ..., partial_credit: _Optional[bool] = ...) -> None: ...

class InstructionReference(_message.Message):
    __slots__ = ("constraints",)
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    constraints: _containers.RepeatedCompositeFieldContainer[InstructionConstraint]
    def __init__(self, constraints: _Optional[_Iterable[_Union[InstructionConstraint, _Mapping]]] = ...) -> None: ...

class InstructionConstraint(_message.Message):
    __slots__ = ("checker", "arguments_json", "description")
    CHECKER_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    checker: str
    arguments_json: str
    description: str
    def __init__(self, checker: _Optional[str] = ..., arguments_json: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class RubricReference(_message.Message):
    __slots__ = ("rubrics", "reference_response", "tool_checkpoints", "expected_final_state")
    class ExpectedFinalStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    RUBRICS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    TOOL_CHECKPOINTS_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FINAL_STATE_FIELD_NUMBER: _ClassVar[int]
    rubrics: _containers.RepeatedCompositeFieldContainer[Rubric]
    reference_response: str
    tool_checkpoints: _containers.RepeatedCompositeFieldContainer[ToolCallCheckpoint]
    expected_final_state: _containers.ScalarMap[str, str]
    def __init__(self, rubrics: _Optional[_Iterable[_Union[Rubric, _Mapping]]] = ..., reference_response: _Optional[str] = ..., tool_checkpoints: _Optional[_Iterable[_Union[ToolCallCheckpoint, _Mapping]]] = ..., expected_final_state: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ExactMatchReference(_message.Message):
    __slots__ = ("accepted_answers", "case_sensitive")
    ACCEPTED_ANSWERS_FIELD_NUMBER: _ClassVar[int]
    CASE_SENSITIVE_FIELD_NUMBER: _ClassVar[int]
    accepted_answers: _containers.RepeatedScalarFieldContainer[str]
    case_sensitive: bool
    def __init__(self, accepted_answers: _Optional[_Iterable[str]] = ..., case_sensitive: _Optional[bool] = ...) -> None: ...

class PuzzleReference(_message.Message):
    __slots__ = ("game24", "sudoku", "cryptarithm", "morse")
    GAME24_FIELD_NUMBER: _ClassVar[int]
    SUDOKU_FIELD_NUMBER: _ClassVar[int]
    CRYPTARITHM_FIELD_NUMBER: _ClassVar[int]
    MORSE_FIELD_NUMBER: _ClassVar[int]
    game24: Game24Puzzle
    sudoku: SudokuPuzzle
    cryptarithm: CryptarithmPuzzle
    morse: MorsePuzzle
    def __init__(self, game24: _Optional[_Union[Game24Puzzle, _Mapping]] = ..., sudoku: _Optional[_Union[SudokuPuzzle, _Mapping]] = ..., cryptarithm: _Optional[_Union[CryptarithmPuzzle, _Mapping]] = ..., morse: _Optional[_Union[MorsePuzzle, _Mapping]] = ...) -> None: ...

class Game24Puzzle(_message.Message):
    __slots__ = ("numbers", "target")
    NUMBERS_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    numbers: _containers.RepeatedScalarFieldContainer[int]
    target: int
    def __init__(self, numbers: _Optional[_Iterable[int]] = ..., target: _Optional[int] = ...) -> None: ...

class SudokuPuzzle(_message.Message):
    __slots__ = ("grid",)
    GRID_FIELD_NUMBER: _ClassVar[int]
    grid: str
    def __init__(self, grid: _Optional[str] = ...) -> None: ...

class CryptarithmPuzzle(_message.Message):
    __slots__ = ("equation",)
    EQUATION_FIELD_NUMBER: _ClassVar[int]
    equation: str
    def __init__(self, equation: _Optional[str] = ...) -> None: ...

class MorsePuzzle(_message.Message):
    __slots__ = ("text", "decode")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DECODE_FIELD_NUMBER: _ClassVar[int]
    text: str
    decode: bool
    def __init__(self, text: _Optional[str] = ..., decode: _Optional[bool] = ...) -> None: ...

class TaskSpec(_message.Message):
    __slots__ = ("kind", "task_id", "prompt", "math", "code", "instruction", "rubric", "exact_match", "puzzle")
    KIND_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MATH_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    RUBRIC_FIELD_NUMBER: _ClassVar[int]
    EXACT_MATCH_FIELD_NUMBER: _ClassVar[int]
    PUZZLE_FIELD_NUMBER: _ClassVar[int]
    kind: TaskKind
    task_id: str
    prompt: str
    math: MathReference
    code: CodeReference
    instruction: InstructionReference
    rubric: RubricReference
    exact_match: ExactMatchReference
    puzzle: PuzzleReference
    def __init__(self, kind: _Optional[_Union[TaskKind, str]] = ..., task_id: _Optional[str] = ..., prompt: _Optional[str] = ..., math: _Optional[_Union[MathReference, _Mapping]] = ..., code: _Optional[_Union[CodeReference, _Mapping]] = ..., instruction: _Optional[_Union[InstructionReference, _Mapping]] = ..., rubric: _Optional[_Union[RubricReference, _Mapping]] = ..., exact_match: _Optional[_Union[ExactMatchReference, _Mapping]] = ..., puzzle: _Optional[_Union[PuzzleReference, _Mapping]] = ...) -> None: ...

class ScoreRequest(_message.Message):
    __slots__ = ("task", "response", "conversation", "trajectory", "skip_hack_check", "final_state")
    class FinalStateEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TASK_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    TRAJECTORY_FIELD_NUMBER: _ClassVar[int]
    SKIP_HACK_CHECK_FIELD_NUMBER: _ClassVar[int]
    FINAL_STATE_FIELD_NUMBER: _ClassVar[int]
    task: TaskSpec
    response: str
    conversation: _containers.RepeatedCompositeFieldContainer[ConversationMessage]
    trajectory: _common_pb2.Trajectory
    skip_hack_check: bool
    final_state: _containers.ScalarMap[str, str]
    def __init__(self, task: _Optional[_Union[TaskSpec, _Mapping]] = ..., response: _Optional[str] = ..., conversation: _Optional[_Iterable[_Union[ConversationMessage, _Mapping]]] = ..., trajectory: _Optional[_Union[_common_pb2.Trajectory, _Mapping]] = ..., skip_hack_check: _Optional[bool] = ..., final_state: _Optional[_Mapping[str, str]] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("reward", "passed", "checks", "hack_findings", "verifier", "latency_ms", "error")
    REWARD_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    CHECKS_FIELD_NUMBER: _ClassVar[int]
    HACK_FINDINGS_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    reward: float
    passed: bool
    checks: _containers.RepeatedCompositeFieldContainer[CheckResult]
    hack_findings: _containers.RepeatedCompositeFieldContainer[HackFinding]
    verifier: str
    latency_ms: float
    error: _common_pb2.ErrorDetail
    def __init__(self, reward: _Optional[float] = ..., passed: _Optional[bool] = ..., checks: _Optional[_Iterable[_Union[CheckResult, _Mapping]]] = ..., hack_findings: _Optional[_Iterable[_Union[HackFinding, _Mapping]]] = ..., verifier: _Optional[str] = ..., latency_ms: _Optional[float] = ..., error: _Optional[_Union[_common_pb2.ErrorDetail, _Mapping]] = ...) -> None: ...

class CheckResult(_message.Message):
    __slots__ = ("name", "passed", "score", "weight", "detail")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PASSED_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    name: str
    passed: bool
    score: float
    weight: float
    detail: str
    def __init__(self, name: _Optional[str] = ..., passed: _Optional[bool] = ..., score: _Optional[float] = ..., weight: _Optional[float] = ..., detail: _Optional[str] = ...) -> None: ...

class HackFinding(_message.Message):
    __slots__ = ("kind", "detail")
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    kind: str
    detail: str
    def __init__(self, kind: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class ScoreBatchRequest(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[ScoreRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[ScoreRequest, _Mapping]]] = ...) -> None: ...

class ScoreBatchResponse(_message.Message):
    __slots__ = ("responses",)
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[ScoreResponse]
    def __init__(self, responses: _Optional[_Iterable[_Union[ScoreResponse, _Mapping]]] = ...) -> None: ...

class CompareRequest(_message.Message):
    __slots__ = ("prompt", "conversation", "response_a", "response_b", "rubrics", "position_swap", "reference_response")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    CONVERSATION_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_FIELD_NUMBER: _ClassVar[int]
    RUBRICS_FIELD_NUMBER: _ClassVar[int]
    POSITION_SWAP_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_RESPONSE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    conversation: _containers.RepeatedCompositeFieldContainer[ConversationMessage]
    response_a: str
    response_b: str
    rubrics: _containers.RepeatedCompositeFieldContainer[Rubric]
    position_swap: bool
    reference_response: str
    def __init__(self, prompt: _Optional[str] = ..., conversation: _Optional[_Iterable[_Union[ConversationMessage, _Mapping]]] = ..., response_a: _Optional[str] = ..., response_b: _Optional[str] = ..., rubrics: _Optional[_Iterable[_Union[Rubric, _Mapping]]] = ..., position_swap: _Optional[bool] = ..., reference_response: _Optional[str] = ...) -> None: ...

class CompareResponse(_message.Message):
    __slots__ = ("preference", "probability_a_better", "verdicts", "rationale", "critic", "position_consistent", "latency_ms")
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_A_BETTER_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    CRITIC_FIELD_NUMBER: _ClassVar[int]
    POSITION_CONSISTENT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    preference: Preference
    probability_a_better: float
    verdicts: _containers.RepeatedCompositeFieldContainer[RubricVerdict]
    rationale: str
    critic: str
    position_consistent: bool
    latency_ms: float
    def __init__(self, preference: _Optional[_Union[Preference, str]] = ..., probability_a_better: _Optional[float] = ..., verdicts: _Optional[_Iterable[_Union[RubricVerdict, _Mapping]]] = ..., rationale: _Optional[str] = ..., critic: _Optional[str] = ..., position_consistent: _Optional[bool] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class RubricVerdict(_message.Message):
    __slots__ = ("rubric_name", "kind", "preference", "response_a_violates", "response_b_violates", "rationale")
    RUBRIC_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    PREFERENCE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_A_VIOLATES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_B_VIOLATES_FIELD_NUMBER: _ClassVar[int]
    RATIONALE_FIELD_NUMBER: _ClassVar[int]
    rubric_name: str
    kind: RubricKind
    preference: Preference
    response_a_violates: bool
    response_b_violates: bool
    rationale: str
    def __init__(self, rubric_name: _Optional[str] = ..., kind: _Optional[_Union[RubricKind, str]] = ..., preference: _Optional[_Union[Preference, str]] = ..., response_a_violates: _Optional[bool] = ..., response_b_violates: _Optional[bool] = ..., rationale: _Optional[str] = ...) -> None: ...

class CriticDataSample(_message.Message):
    __slots__ = ("response", "reward", "verifier")
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    REWARD_FIELD_NUMBER: _ClassVar[int]
    VERIFIER_FIELD_NUMBER: _ClassVar[int]
    response: str
    reward: float
    verifier: str
    def __init__(self, response: _Optional[str] = ..., reward: _Optional[float] = ..., verifier: _Optional[str] = ...) -> None: ...

class ExportCriticDataRequest(_message.Message):
    __slots__ = ("prompt_id", "prompt", "samples", "dataset", "min_margin")
    PROMPT_ID_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MIN_MARGIN_FIELD_NUMBER: _ClassVar[int]
    prompt_id: str
    prompt: str
    samples: _containers.RepeatedCompositeFieldContainer[CriticDataSample]
    dataset: str
    min_margin: float
    def __init__(self, prompt_id: _Optional[str] = ..., prompt: _Optional[str] = ..., samples: _Optional[_Iterable[_Union[CriticDataSample, _Mapping]]] = ..., dataset: _Optional[str] = ..., min_margin: _Optional[float] = ...) -> None: ...

class ExportCriticDataResponse(_message.Message):
    __slots__ = ("rows_written", "path")
    ROWS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    rows_written: int
    path: str
    def __init__(self, rows_written: _Optional[int] = ..., path: _Optional[str] = ...) -> None: ...
