"""From an ExecutionRequest to runs: write the files, compile (C++), run once or per test case."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from k2rl.core.errors import InvalidArgument, NotFound
from k2rl.sandbox.matching import compare
from k2rl.sandbox.model import (
    ExecutionRequest,
    ExecutionResult,
    Language,
    Limits,
    RunResult,
    Status,
    TestCase,
    TestResult,
)
from k2rl.sandbox.runtime import KillSwitch, ProcessRuntime
from k2rl.sandbox.workdir import Workdir, check_relative

# g++ spawns cc1plus, as and ld and maps far more address space than the programs it builds;
# a compile runs under the request's limits raised to at least these.
COMPILE_FLOOR = Limits(wall_time_ms=30_000, cpu_time_ms=30_000, memory_bytes=2 * 1024**3,
                       max_processes=32, max_output_bytes=64 * 1024, max_file_size_bytes=256 * 1024**2)
_ENV_NAME_FORBIDDEN = ("=", "\x00")


@dataclass(frozen=True)
class Toolchain:
    """Programs used inside the sandbox (resolved on the sandbox's PATH)."""

    python: str = "python3"
    bash: str = "bash"
    cxx: str = "g++"


class Runtime(Protocol):
    """Runs one argv in a working directory under limits: ProcessRuntime or a session's PodSandbox."""

    def run(self, argv: Sequence[str], workdir: Any, limits: Limits, *, stdin: bytes = b"",
            env: Mapping[str, str] | None = None, kill_switch: KillSwitch | None = None) -> RunResult: ...


def validate(request: ExecutionRequest, prefix: str) -> None:
    """Reject what would be unsafe or meaningless to run; ``prefix`` names the request field."""
    if not request.code and not request.command:
        raise InvalidArgument("give code to run or a command", field=f"{prefix}.code")
    for path in request.files:
        check_relative(path, f"{prefix}.files[{path!r}]")
    for name, value in request.env.items():
        if not name or any(c in name for c in _ENV_NAME_FORBIDDEN) or "\x00" in value:
            raise InvalidArgument(f"invalid environment variable {name!r}", field=f"{prefix}.env")
    if any(not arg or "\x00" in arg for arg in request.command[:1]) or any("\x00" in a for a in request.command):
        raise InvalidArgument("command arguments must not contain NUL and argv[0] must be set",
                              field=f"{prefix}.command")
    for path in request.fetch_files:
        check_relative(path, f"{prefix}.fetch_files")
    for index, case in enumerate(request.test_cases):
        if case.test_file is not None:
            check_relative(case.test_file, f"{prefix}.test_cases[{index}].test_file")
        elif case.expected_stdout is None:
            raise InvalidArgument("set expected_stdout or test_file", field=f"{prefix}.test_cases[{index}]")


class Executor:
    """Runs validated requests in working directories through a runtime (default: the process one)."""

    def __init__(self, runtime: ProcessRuntime, toolchain: Toolchain, sandbox_owner: tuple[int, int] | None) -> None:
        self.runtime = runtime
        self.toolchain = toolchain
        self.sandbox_owner = sandbox_owner

    def execute(self, request: ExecutionRequest, limits: Limits, workdir: Workdir,
                kill_switch: KillSwitch | None = None, runtime: Runtime | None = None) -> ExecutionResult:
        """Run in ``workdir``; ``runtime`` (a session's pod) replaces the process runtime."""
        result = self._execute(request, limits, workdir, kill_switch, runtime or self.runtime)
        if not request.fetch_files:
            return result
        fetched = {}
        for path in request.fetch_files:
            try:
                fetched[path], _ = workdir.read(check_relative(path, "fetch_files"), 0, limits.max_output_bytes,
                                                field="fetch_files")
            except NotFound:
                continue  # SandboxFusion leaves missing files out
        return replace(result, fetched_files=fetched)

    def _execute(self, request: ExecutionRequest, limits: Limits, workdir: Workdir,
                 kill_switch: KillSwitch | None, runtime: Runtime) -> ExecutionResult:
        self._write_files(request, workdir)
        run = _Runner(runtime, workdir.path, request.env, kill_switch)
        argv = list(request.command)
        compile_result = None
        if request.language is Language.CPP and request.code:
            compile_result = run(self._compile_argv("solution.cpp", "solution"), _compile_limits(limits))
            if compile_result.status is not Status.OK:
                status = Status.SANDBOX_ERROR if compile_result.status is Status.SANDBOX_ERROR else Status.COMPILE_ERROR
                return ExecutionResult(status, compile=compile_result, error=compile_result.error)
        argv = argv or self._runner_argv(request.language, request.language.value)
        if not request.test_cases:
            result = run(argv, limits, request.stdin)
            return ExecutionResult(result.status, run=result, compile=compile_result, error=result.error)
        results = self._run_tests(request, argv, limits, run)
        passed = sum(r.passed for r in results)
        failed_run = next((r.run for r in results if r.run is not None and r.run.status is not Status.OK), None)
        status = failed_run.status if failed_run else Status.OK
        return ExecutionResult(status, compile=compile_result, test_results=tuple(results), tests_passed=passed,
                               error=failed_run.error if failed_run else "")

    def _run_tests(self, request: ExecutionRequest, argv: list[str], limits: Limits,
                   run: _Runner) -> list[TestResult]:
        results: list[TestResult] = []
        for case in request.test_cases:
            if request.stop_on_first_failure and any(not r.passed for r in results):
                results.append(TestResult(case.name, passed=False, skipped=True))
                continue
            results.append(self._run_test(request.language, case, argv, limits, run))
        return results

    def _run_test(self, language: Language, case: TestCase, argv: list[str], limits: Limits,
                  run: _Runner) -> TestResult:
        if case.test_file is None:
            result = run(argv, limits, case.stdin)
            if result.status is not Status.OK:
                return TestResult(case.name, False, run=result, failure_message=_status_message(result))
            assert case.expected_stdout is not None
            mismatch = compare(case.expected_stdout, result.stdout, case.match, case.float_tolerance)
            return TestResult(case.name, not mismatch, run=result, failure_message=mismatch)
        test_argv = self._runner_argv(language, case.test_file)
        if language is Language.CPP:
            binary = ".test-binary"
            built = run(self._compile_argv(case.test_file, binary), _compile_limits(limits))
            if built.status is not Status.OK:
                message = "test file did not compile: " + built.stderr[-300:].decode(errors="replace")
                return TestResult(case.name, False, run=built, failure_message=message)
            test_argv = [f"./{binary}"]
        result = run(test_argv, limits, case.stdin)
        passed = result.status is Status.OK
        return TestResult(case.name, passed, run=result, failure_message="" if passed else _status_message(result))

    def _runner_argv(self, language: Language, path: str) -> list[str]:
        if language is Language.PYTHON:
            return [self.toolchain.python, path]
        if language is Language.BASH:
            return [self.toolchain.bash, path]
        return ["./solution"]

    def _compile_argv(self, source: str, output: str) -> list[str]:
        return [self.toolchain.cxx, "-std=c++17", "-O2", "-pipe", "-o", output, source]

    def _write_files(self, request: ExecutionRequest, workdir: Workdir) -> None:
        files = dict(request.files)
        if request.code:
            files[request.language.value] = request.code.encode()
        for path, content in files.items():
            workdir.write(PurePosixPath(path), content, field=f"files[{path!r}]", owner=self.sandbox_owner)
        if self.sandbox_owner is not None:
            workdir.chown_tree(self.sandbox_owner)


class _Runner:
    """``run(argv, limits, stdin)`` bound to one working directory."""

    def __init__(self, runtime: Runtime, workdir: Path, env: dict[str, str],
                 kill_switch: KillSwitch | None) -> None:
        self._runtime, self._workdir, self._env, self._kill_switch = runtime, workdir, env, kill_switch

    def __call__(self, argv: list[str], limits: Limits, stdin: bytes = b"") -> RunResult:
        return self._runtime.run(argv, self._workdir, limits, stdin=stdin, env=self._env,
                                 kill_switch=self._kill_switch)


def _compile_limits(limits: Limits) -> Limits:
    return replace(limits, **{name: max(getattr(limits, name), getattr(COMPILE_FLOOR, name))
                              for name in Limits.names() if name != "max_output_bytes"})


def _status_message(result: RunResult) -> str:
    detail = f"exit code {result.exit_code}" if not result.signal else f"signal {result.signal}"
    tail = result.stderr[-200:].decode(errors="replace").strip()
    return f"{result.status.value} ({detail})" + (f": {tail}" if tail else "")

