"""Code verifier against the sandbox gRPC contract, served by a test double in-process."""

from __future__ import annotations

import grpc
import pytest

from k2rl.core.client import close_stub, create_stub
from k2rl.judge.testing import sandbox_double
from k2rl.judge.verifiers.code import CodeTask, CodeVerifier, extract_code
from k2rl.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

PY = sandbox_pb2.LANGUAGE_PYTHON
TESTS = [sandbox_pb2.TestCase(name=f"t{n}", stdin=f"{n}\n".encode(), expected_stdout=f"{2 * n}\n".encode())
         for n in (1, 2, 3, 50)]


@pytest.mark.parametrize(("response", "language", "code"), [
    ("Here:\n```python\nprint(1)\n```\nand a test:\n```\nassert True\n```", PY, "print(1)\n"),
    ("```py\nx = 1\n```", PY, "x = 1\n"),
    ("```bash\necho hi\n```\n```python\nprint(2)\n```", sandbox_pb2.LANGUAGE_BASH, "echo hi\n"),
    ("print(3)", PY, "print(3)"),  # bare code
    ("<think>```python\nwrong()\n```</think>```python\nright()\n```", PY, "right()\n"),
])
def test_code_extraction(response: str, language: int, code: str) -> None:
    assert extract_code(response, language) == code


@pytest.mark.parametrize(("code", "partial", "reward", "passed"), [
    ("print(int(input()) * 2)", False, 1.0, True),
    ("n = int(input())\nprint(n * 2 if n < 10 else 0)", True, 0.75, False),  # wrong on the big case
    ("n = int(input())\nprint(n * 2 if n < 10 else 0)", False, 0.0, False),
    ("raise SystemExit(1)", True, 0.0, False),
    ("print('ünïcødé')", True, 0.0, False),
])
def test_rewards(code: str, partial: bool, reward: float, passed: bool) -> None:
    with sandbox_double() as (double, address):
        stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, address)
        try:
            verdict = CodeVerifier(stub, timeout_s=30).verify(CodeTask(PY, TESTS, partial_credit=partial), code)
        finally:
            close_stub(stub)
    assert (verdict.reward, verdict.passed, verdict.error) == (pytest.approx(reward), passed, None)
    assert len(verdict.checks) == len(TESTS)
    assert double.requests[0].stop_on_first_failure is not partial  # all-pass needs no more runs


@pytest.mark.parametrize(("status", "retryable"), [
    (grpc.StatusCode.UNAVAILABLE, True), (grpc.StatusCode.INVALID_ARGUMENT, False),
])
def test_sandbox_rpc_failures_are_scoring_errors_not_zero_rewards(status: grpc.StatusCode, retryable: bool) -> None:
    with sandbox_double() as (double, address):
        double.fail_with = status
        stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, address)
        try:
            verdict = CodeVerifier(stub, timeout_s=5).verify(CodeTask(PY, TESTS), "print(1)")
        finally:
            close_stub(stub)
    assert verdict.error is not None
    assert (verdict.error.code, verdict.error.retryable) == (f"SANDBOX_{status.name}", retryable)


def test_sandbox_internal_error_is_retryable_scoring_error() -> None:
    with sandbox_double() as (double, address):
        double.sandbox_error = True
        stub = create_stub(sandbox_pb2_grpc.SandboxServiceStub, address)
        try:
            verdict = CodeVerifier(stub, timeout_s=5).verify(CodeTask(PY, TESTS), "print(1)")
        finally:
            close_stub(stub)
    assert verdict.error is not None and verdict.error.code == "SANDBOX_ERROR" and verdict.error.retryable
