"""Test doubles of the judge's dependencies, for its tests and for callers' integration tests.

``scripted_critic``: an OpenAI-compatible endpoint (a real HTTP server on loopback) that
answers ``POST /v1/chat/completions`` with replies chosen by a script function, so the real
``openai`` client, prompts and parsing are exercised end to end.
``sandbox_double``: a gRPC server implementing the sandbox contract for trusted test code.
Neither is for production use.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc

from k2rl.common.v1 import common_pb2
from k2rl.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

Script = Callable[[list[dict[str, str]]], str]


@dataclass
class ScriptedCritic:
    """The running double: its base URL and every request body it received."""

    base_url: str
    requests: list[dict] = field(default_factory=list)


def _handler(script: Script, double: ScriptedCritic, lock: threading.Lock) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                double.requests.append(body)
            if self.path != "/v1/chat/completions":
                self.send_error(404)
                return
            try:
                content = script(body["messages"])
            except Exception as error:  # the script signals an endpoint failure
                self.send_response(500)
                self.end_headers()
                self.wfile.write(json.dumps({"error": {"message": str(error)}}).encode())
                return
            payload = json.dumps({
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


@contextmanager
def scripted_critic(script: Script) -> Iterator[ScriptedCritic]:
    lock = threading.Lock()
    double = ScriptedCritic("")
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(script, double, lock))
    double.base_url = f"http://127.0.0.1:{server.server_port}/v1"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield double
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def shown_responses(messages: list[dict[str, str]]) -> tuple[str, str]:
    """The (A, B) response texts of a comparison prompt, as the critic saw them."""
    user = messages[-1]["content"]
    a = user.split("## Response A\n", 1)[1].split("\n\n## Response B\n", 1)[0]
    b = user.split("## Response B\n", 1)[1].split("\n\n## Rubrics\n", 1)[0]
    return a, b


def verdict_json(overall: str, confidence: float = 1.0) -> str:
    return json.dumps({"rubrics": [], "overall": overall, "confidence": confidence, "rationale": "scripted"})


class SandboxContractDouble(sandbox_pb2_grpc.SandboxServiceServicer):
    """Test double of ``k2rl.sandbox.v1.SandboxService``: ``Execute`` runs trusted test
    programs as plain, unisolated ``python3`` subprocesses (never model output in
    production) and compares stdout by trimmed lines. ``fail_with`` makes every call
    abort with that status instead; ``sandbox_error`` makes it report SANDBOX_ERROR."""

    def __init__(self) -> None:
        self.requests: list[sandbox_pb2.ExecuteRequest] = []
        self.fail_with: grpc.StatusCode | None = None
        self.sandbox_error = False

    def Execute(self, request: sandbox_pb2.ExecuteRequest, context: grpc.ServicerContext) -> sandbox_pb2.ExecuteResponse:  # noqa: N802
        self.requests.append(request)
        if self.fail_with is not None:
            context.abort(self.fail_with, "sandbox double told to fail")
        if self.sandbox_error:
            return sandbox_pb2.ExecuteResponse(status=sandbox_pb2.EXECUTION_STATUS_SANDBOX_ERROR,
                                               error=common_pb2.ErrorDetail(code="EXECUTOR_LOST", retryable=True))
        results, failed = [], False
        for case in request.test_cases:
            if failed and request.stop_on_first_failure:
                results.append(sandbox_pb2.TestResult(name=case.name, skipped=True))
                continue
            run = subprocess.run([sys.executable, "-c", request.code], input=case.stdin, capture_output=True,
                                 timeout=10)
            got = [line.rstrip() for line in run.stdout.decode().rstrip().splitlines()]
            want = [line.rstrip() for line in case.expected_stdout.decode().rstrip().splitlines()]
            passed = run.returncode == 0 and got == want
            failed = failed or not passed
            status = sandbox_pb2.EXECUTION_STATUS_OK if run.returncode == 0 else sandbox_pb2.EXECUTION_STATUS_RUNTIME_ERROR
            results.append(sandbox_pb2.TestResult(
                name=case.name, passed=passed, failure_message="" if passed else f"expected {want}, got {got}",
                run=sandbox_pb2.RunResult(status=status, exit_code=run.returncode, stdout=run.stdout[:4096])))
        return sandbox_pb2.ExecuteResponse(status=sandbox_pb2.EXECUTION_STATUS_OK, test_results=results,
                                           tests_passed=sum(r.passed for r in results))


@contextmanager
def sandbox_double() -> Iterator[tuple[SandboxContractDouble, str]]:
    """A ``SandboxContractDouble`` served on a loopback port: ``(double, "host:port")``."""
    double = SandboxContractDouble()
    server = grpc.server(futures.ThreadPoolExecutor(4))
    sandbox_pb2_grpc.add_SandboxServiceServicer_to_server(double, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield double, f"127.0.0.1:{port}"
    finally:
        server.stop(0).wait()
