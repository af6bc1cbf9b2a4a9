"""Domain types of the sandbox, free of gRPC: what to run, under which limits, what happened.

The servicer converts protobuf messages to and from these; the runtime, pool, sessions and
HTTP API work only with them, so each is testable without a server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, fields

from k2rl.core.errors import InvalidArgument


class Language(enum.Enum):
    """How ExecutionRequest.code is run; the value is the file it is written to."""

    PYTHON = "solution.py"
    BASH = "solution.sh"
    CPP = "solution.cpp"


class Status(enum.Enum):
    """Outcome of one run; names match the proto's ``EXECUTION_STATUS_*`` suffixes."""

    OK = "ok"
    COMPILE_ERROR = "compile_error"
    RUNTIME_ERROR = "runtime_error"
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    OUTPUT_LIMIT = "output_limit"
    SANDBOX_ERROR = "sandbox_error"


class OutputMatch(enum.Enum):
    EXACT = "exact"
    TRIMMED_LINES = "trimmed_lines"
    TOKENS = "tokens"


@dataclass(frozen=True)
class Limits:
    """Resource limits of one run (one process tree inside one sandbox)."""

    wall_time_ms: int
    cpu_time_ms: int
    memory_bytes: int
    max_processes: int
    max_output_bytes: int
    max_file_size_bytes: int

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def resolve(self, requested: dict[str, int], ceilings: Limits, field_prefix: str) -> Limits:
        """``requested`` with zeros replaced by ``self`` (the defaults), checked against ``ceilings``."""
        values = {}
        for name in self.names():
            value = int(requested.get(name) or 0) or getattr(self, name)
            ceiling = getattr(ceilings, name)
            if value > ceiling:
                raise InvalidArgument(f"{value} is above the pool's ceiling {ceiling}",
                                      field=f"{field_prefix}.{name}")
            values[name] = value
        return Limits(**values)

    def lowered_to(self, ceilings: Limits) -> Limits:
        """Each limit capped at ``ceilings`` (session defaults never exceed the pool's)."""
        return Limits(**{n: min(getattr(self, n), getattr(ceilings, n)) for n in self.names()})


@dataclass(frozen=True)
class RunResult:
    """What one process tree did."""

    status: Status
    exit_code: int = 0
    signal: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    wall_time_ms: float = 0.0
    cpu_time_ms: float = 0.0
    peak_memory_bytes: int = 0
    error: str = ""


@dataclass(frozen=True)
class TestCase:
    name: str
    stdin: bytes = b""
    expected_stdout: bytes | None = None
    test_file: str | None = None
    match: OutputMatch = OutputMatch.TRIMMED_LINES
    float_tolerance: float = 0.0


@dataclass(frozen=True)
class TestResult:
    name: str
    passed: bool
    skipped: bool = False
    run: RunResult | None = None
    failure_message: str = ""


@dataclass(frozen=True)
class ExecutionRequest:
    """One Execute call; ``requested_limits`` holds the caller's values, 0 = the default."""

    language: Language
    code: str
    requested_limits: dict[str, int] = field(default_factory=dict)
    command: tuple[str, ...] = ()
    stdin: bytes = b""
    files: dict[str, bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    test_cases: tuple[TestCase, ...] = ()
    stop_on_first_failure: bool = False
    session_id: str = ""
    # Files to return after the run (SandboxFusion's fetch_files), each cut at max_output_bytes.
    fetch_files: tuple[str, ...] = ()


@dataclass(frozen=True)
class ExecutionResult:
    status: Status
    run: RunResult | None = None
    compile: RunResult | None = None
    test_results: tuple[TestResult, ...] = ()
    tests_passed: int = 0
    error: str = ""
    executor_id: str = ""
    fetched_files: dict[str, bytes] = field(default_factory=dict)
