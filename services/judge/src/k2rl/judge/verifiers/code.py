"""Code: run the response's code against the task's tests in the sandbox service.

Talks to the sandbox only through its gRPC contract (``k2rl.sandbox.v1``). Reward = 1 if
every test passes, or the fraction passed with ``partial_credit``. A compile error or a
wrong answer is a result (reward 0); a sandbox that is down or failed is a scoring error
(the caller may retry), never a zero reward the policy would learn from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import grpc

from k2rl.judge.text import strip_thinking
from k2rl.judge.verdict import Check, ScoringError, Verdict
from k2rl.sandbox.v1 import sandbox_pb2

VERIFIER = "code_tests/1"

_FENCE = re.compile(r"```[ \t]*([\w+#.-]*)[^\n]*\n(.*?)```", re.DOTALL)
_LANGUAGE_TAGS = {
    sandbox_pb2.LANGUAGE_PYTHON: {"python", "py", "python3"},
    sandbox_pb2.LANGUAGE_BASH: {"bash", "sh", "shell"},
    sandbox_pb2.LANGUAGE_CPP: {"cpp", "c++", "cc", "cxx"},
}


def extract_code(response: str, language: int) -> str:
    """The last fenced block tagged with the language, else the last fenced block, else
    the whole response (models often answer with bare code)."""
    text = strip_thinking(response)
    blocks = [(tag.lower(), body) for tag, body in _FENCE.findall(text)]
    tagged = [body for tag, body in blocks if tag in _LANGUAGE_TAGS.get(language, set())]
    if tagged:
        return tagged[-1]
    if blocks:
        return blocks[-1][1]
    return text.strip()


@dataclass(frozen=True)
class CodeTask:
    language: int  # sandbox_pb2.Language
    tests: list[sandbox_pb2.TestCase]
    files: dict[str, bytes] = field(default_factory=dict)
    limits: sandbox_pb2.ResourceLimits | None = None
    partial_credit: bool = False


class CodeVerifier:
    """Scores code with a ``SandboxServiceStub`` (any object with an ``Execute`` method)."""

    def __init__(self, sandbox: Any, timeout_s: float) -> None:
        self._sandbox = sandbox
        self._timeout_s = timeout_s

    def verify(self, task: CodeTask, code: str) -> Verdict:
        request = sandbox_pb2.ExecuteRequest(
            language=task.language, code=code, files=task.files, limits=task.limits,
            test_cases=task.tests, stop_on_first_failure=not task.partial_credit,
        )
        try:
            reply = self._sandbox.Execute(request, timeout=self._timeout_s)
        except grpc.RpcError as error:
            status = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
            details = error.details() if isinstance(error, grpc.Call) else str(error)
            retryable = status in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                   grpc.StatusCode.RESOURCE_EXHAUSTED)
            return Verdict.unscored(VERIFIER, ScoringError(
                f"SANDBOX_{status.name}", f"sandbox Execute failed: {details}", retryable=retryable,
                hint="check the sandbox service (K2RL_DEPENDENCIES['sandbox'])" if retryable else "",
            ))
        return self._verdict(task, reply)

    def _verdict(self, task: CodeTask, reply: sandbox_pb2.ExecuteResponse) -> Verdict:
        if reply.status == sandbox_pb2.EXECUTION_STATUS_SANDBOX_ERROR:
            return Verdict.unscored(VERIFIER, ScoringError(
                "SANDBOX_ERROR", f"sandbox failed: {reply.error.message or 'no detail'}",
                retryable=reply.error.retryable or not reply.error.code,
            ))
        if reply.status == sandbox_pb2.EXECUTION_STATUS_COMPILE_ERROR:
            stderr = reply.compile.stderr.decode("utf-8", "replace")[-300:]
            return Verdict.failed(VERIFIER, "compile", f"compile error: {stderr}")
        checks = []
        for result in reply.test_results:
            if result.skipped:
                detail = "skipped after an earlier failure"
            elif result.passed:
                detail = f"passed in {result.run.wall_time_ms:.0f} ms"
            else:
                status = sandbox_pb2.ExecutionStatus.Name(result.run.status)
                detail = f"{status}: {result.failure_message}"[:300]
            checks.append(Check(f"test {result.name}", result.passed, detail))
        total = len(task.tests)
        passed = sum(c.passed for c in checks)
        reward = passed / total if task.partial_credit else float(passed == total)
        return Verdict(VERIFIER, reward, passed == total and total > 0, checks)
