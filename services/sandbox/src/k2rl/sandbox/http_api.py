"""SandboxFusion-compatible HTTP API: ``POST /run_code`` with its request and response shape.

RL frameworks that already call SandboxFusion (verl's ``sandbox_fusion`` reward, slime) can
point their URL at this server unchanged. Request: ``code``, ``language``, ``stdin``,
``compile_timeout`` / ``run_timeout`` (seconds), ``memory_limit_MB`` (-1 = default),
``files`` (path -> base64) and ``fetch_files``. Response: ``status`` (Success, Failed,
SandboxError), ``message``, ``compile_result`` / ``run_result`` (status Finished, Error or
TimeLimitExceeded; execution_time, return_code, stdout, stderr) and ``files`` (base64).
Only the languages the pool runs are accepted (python, bash, cpp).
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import threading
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from k2rl.core.errors import InvalidArgument, NotFound, ResourceExhausted
from k2rl.sandbox.model import ExecutionRequest, ExecutionResult, Language, RunResult, Status
from k2rl.sandbox.pool import SandboxPool

log = logging.getLogger(__name__)

LANGUAGES = {"python": Language.PYTHON, "bash": Language.BASH, "cpp": Language.CPP}


class RequestError(ValueError):
    """A request body that does not follow the /run_code schema."""


def _seconds_to_ms(body: dict[str, Any], key: str, default: float) -> int:
    value = body.get(key, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        raise RequestError(f"{key} must be a positive number of seconds")
    return int(value * 1000)


def parse_request(body: Any) -> ExecutionRequest:
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    code, language = body.get("code"), body.get("language")
    if not isinstance(code, str):
        raise RequestError("code must be a string")
    if language not in LANGUAGES:
        raise RequestError(f"language must be one of {', '.join(LANGUAGES)}")
    stdin = body.get("stdin") or ""
    if not isinstance(stdin, str):
        raise RequestError("stdin must be a string")
    memory_mb = body.get("memory_limit_MB", -1)
    if isinstance(memory_mb, bool) or not isinstance(memory_mb, int):
        raise RequestError("memory_limit_MB must be an integer (-1 = default)")
    files: dict[str, bytes] = {}
    raw_files = body.get("files") or {}
    if not isinstance(raw_files, dict):
        raise RequestError("files must map paths to base64 strings")
    for path, content in raw_files.items():
        if content is None:
            continue
        try:
            files[str(path)] = base64.b64decode(content, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise RequestError(f"files[{path!r}] is not base64") from None
    fetch = body.get("fetch_files") or []
    if not isinstance(fetch, list) or not all(isinstance(p, str) for p in fetch):
        raise RequestError("fetch_files must be a list of paths")
    run_ms = _seconds_to_ms(body, "run_timeout", 10)
    limits = {"wall_time_ms": run_ms, "cpu_time_ms": run_ms}
    if memory_mb > 0:
        limits["memory_bytes"] = memory_mb * 1024 * 1024
    _seconds_to_ms(body, "compile_timeout", 10)  # validated; compiles run under the pool's compile floor
    return ExecutionRequest(LANGUAGES[language], code, limits, stdin=stdin.encode(), files=files,
                            fetch_files=tuple(fetch))


def _command_result(run: RunResult | None) -> dict[str, Any] | None:
    if run is None:
        return None
    status = {Status.OK: "Finished", Status.RUNTIME_ERROR: "Finished", Status.TIMEOUT: "TimeLimitExceeded"}
    return {
        "status": status.get(run.status, "Error"),
        "execution_time": run.wall_time_ms / 1000,
        "return_code": run.exit_code if not run.signal else -run.signal,
        "stdout": run.stdout.decode(errors="replace"),
        "stderr": run.stderr.decode(errors="replace"),
    }


def render_response(result: ExecutionResult) -> dict[str, Any]:
    if result.status is Status.SANDBOX_ERROR:
        overall, message = "SandboxError", result.error
    elif result.status is Status.OK:
        overall, message = "Success", ""
    else:
        overall, message = "Failed", result.status.value
    return {
        "status": overall,
        "message": message,
        "compile_result": _command_result(result.compile),
        "run_result": _command_result(result.run),
        "executor_pod_name": result.executor_id,
        "files": {path: base64.b64encode(data).decode() for path, data in result.fetched_files.items()},
    }


def create_app(pool: SandboxPool) -> Starlette:
    async def run_code(request: Request) -> JSONResponse:
        try:
            execution = parse_request(await request.json())
            result = await run_in_threadpool(pool.execute, execution)
        except (RequestError, ValueError) as error:  # JSON syntax errors are ValueErrors
            return JSONResponse({"detail": str(error)}, status_code=422)
        except InvalidArgument as error:
            return JSONResponse({"detail": error.details()}, status_code=422)
        except NotFound as error:
            return JSONResponse({"detail": error.details()}, status_code=404)
        except ResourceExhausted as error:
            return JSONResponse({"status": "SandboxError", "message": error.details()}, status_code=429)
        return JSONResponse(render_response(result))

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/run_code", run_code, methods=["POST"]), Route("/health", health)])


class HttpApiServer:
    """uvicorn serving ``create_app`` on a background thread, stopped with the service."""

    def __init__(self, pool: SandboxPool, host: str, port: int) -> None:
        config = uvicorn.Config(create_app(pool), host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="sandbox-http", daemon=True)
        self.host, self.port = host, port

    def start(self, timeout_s: float = 10.0) -> None:
        self._thread.start()
        for _ in range(int(timeout_s / 0.02)):
            if self._server.started:
                log.info("SandboxFusion-compatible HTTP API serving", extra={"fields": {
                    "address": f"http://{self.host}:{self.port}/run_code"}})
                return
            if not self._thread.is_alive():
                break
            self._thread.join(0.02)
        raise OSError(f"sandbox HTTP API did not start on {self.host}:{self.port} (port in use?)")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
