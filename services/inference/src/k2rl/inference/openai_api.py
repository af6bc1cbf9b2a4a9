"""OpenAI-compatible HTTP API (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``).

Served by uvicorn beside the gRPC server, on the same engine. Used by the judge as a
critic and by any OpenAI client. Extensions in the vLLM style are accepted in the body:
``top_k``, ``min_tokens``, ``ignore_eos``, ``stop_token_ids``. Logprobs are those of the
sampled tokens as the engine defines them (see ``sampler.py``); ``top_logprobs`` are not
computed and come back empty.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from k2rl.core.errors import ServiceError
from k2rl.inference.engine import GenerationRequest
from k2rl.inference.runner import EngineRunner
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.sequence import SequenceUpdate

HTTP_STATUS = {"INVALID_ARGUMENT": 400, "ALREADY_EXISTS": 409, "FAILED_PRECONDITION": 503, "RESOURCE_EXHAUSTED": 429}


class _SamplingBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(None, ge=0)
    max_completion_tokens: int | None = Field(None, ge=0)
    temperature: float | None = None
    top_p: float | None = None
    n: int = 1
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    user: str | None = None
    top_k: int = 0
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] = Field(default_factory=list)

    def options(self, default_max_tokens: int) -> SamplingOptions:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        max_tokens = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return SamplingOptions(
            temperature=1.0 if self.temperature is None else self.temperature,
            top_p=1.0 if self.top_p is None else self.top_p,
            top_k=self.top_k,
            n=self.n,
            seed=self.seed,
            max_tokens=default_max_tokens if max_tokens is None else max_tokens,
            min_tokens=self.min_tokens,
            stop_strings=tuple(stop),
            stop_token_ids=tuple(self.stop_token_ids),
            ignore_eos=self.ignore_eos,
        )


class CompletionBody(_SamplingBody):
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool = False


class ChatBody(_SamplingBody):
    messages: list[dict[str, Any]]
    logprobs: bool = False
    top_logprobs: int | None = None
    tools: list[dict[str, Any]] | None = None


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": status}}, status)


class _Choice:
    """Accumulates one sample's updates."""

    def __init__(self) -> None:
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.text = ""
        self.finish_reason: str | None = None
        self.usage = (0, 0, 0)

    def add(self, update: SequenceUpdate) -> None:
        self.token_ids += update.token_ids
        self.logprobs += update.logprobs
        self.text += update.text
        if update.finish_reason is not None:
            self.finish_reason = update.finish_reason.value
            self.usage = (update.prompt_tokens, update.completion_tokens, update.cached_prompt_tokens)


class OpenAIApi:
    """The FastAPI application over an ``EngineRunner``."""

    def __init__(self, runner: EngineRunner, model_name: str, default_max_tokens: int = 16) -> None:
        self.runner = runner
        self.model_name = model_name
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())
        self.app = FastAPI(title="k2rl inference", docs_url=None, redoc_url=None)
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/completions")(self.completions)
        self.app.post("/v1/chat/completions")(self.chat_completions)
        self.app.get("/health")(lambda: {"status": "ok"})

    @property
    def tokenizer(self) -> Any:
        return self.runner.engine.tokenizer

    async def models(self) -> dict[str, Any]:
        card = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "k2rl"}
        return {"object": "list", "data": [card]}

    # --- requests -------------------------------------------------------------------

    async def completions(self, body: CompletionBody, request: Request) -> Any:
        prompts = self._completion_prompts(body.prompt)
        if isinstance(prompts, JSONResponse):
            return prompts
        return await self._serve(body, prompts, "text_completion", request, chat=False, logprobs=body.logprobs is not None)

    async def chat_completions(self, body: ChatBody, request: Request) -> Any:
        try:
            prompt = self.tokenizer.apply_chat_template(body.messages, tools=body.tools, add_generation_prompt=True)
        except Exception as error:  # template errors are the caller's messages' fault
            return _error(400, f"cannot apply the chat template: {error}", "invalid_request_error", "messages")
        return await self._serve(body, [list(prompt)], "chat.completion", request, chat=True, logprobs=body.logprobs)

    def _completion_prompts(self, prompt: Any) -> list[list[int]] | JSONResponse:
        if isinstance(prompt, str):
            return [self.tokenizer.encode(prompt)]
        if prompt and all(isinstance(p, int) for p in prompt):
            return [list(prompt)]
        if prompt and all(isinstance(p, str) for p in prompt):
            return [self.tokenizer.encode(p) for p in prompt]
        if prompt and all(isinstance(p, list) for p in prompt):
            return [list(p) for p in prompt]
        return _error(400, "prompt must be a string, a list of strings or token ids", "invalid_request_error", "prompt")

    async def _serve(
        self, body: _SamplingBody, prompts: list[list[int]], kind: str, request: Request, *, chat: bool, logprobs: bool
    ) -> Any:
        if body.model is not None and body.model != self.model_name:
            return _error(404, f"model {body.model!r} is not served here (serving {self.model_name!r})",
                          "invalid_request_error", "model")
        try:
            options = body.options(self.default_max_tokens)
        except ServiceError as error:
            return _error(400, error.details(), "invalid_request_error", error.field)
        response_id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, SequenceUpdate]] = asyncio.Queue()
        request_ids = [f"{response_id}-{i}" for i in range(len(prompts))]
        try:
            for index, (request_id, prompt) in enumerate(zip(request_ids, prompts, strict=True)):
                sink = self._sink(loop, queue, index)
                generation = GenerationRequest(request_id, prompt, options, return_text=True)
                await asyncio.to_thread(self.runner.submit, generation, sink)
        except ServiceError as error:
            self._abort(request_ids)
            status = HTTP_STATUS.get(error.code.name, 500)
            return _error(status, error.details(), "invalid_request_error", error.field)
        total = len(prompts) * options.n
        meta = {"id": response_id, "object": kind, "created": int(time.time()), "model": self.model_name}
        if body.stream:
            events = self._stream_events(queue, total, options.n, meta, chat=chat, logprobs=logprobs, ids=request_ids)
            return StreamingResponse(events, media_type="text/event-stream")
        choices = [_Choice() for _ in range(total)]
        try:
            done = 0
            while done < total:
                index, update = await queue.get()
                choice = choices[index * options.n + update.sample_index]
                choice.add(update)
                done += update.finish_reason is not None
        finally:
            self._abort(request_ids)  # no-op once finished; stops work if the client went away
        return self._final(meta, choices, options.n, chat=chat, logprobs=logprobs)

    @staticmethod
    def _sink(
        loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[tuple[int, SequenceUpdate]], index: int
    ) -> Callable[[SequenceUpdate], None]:
        return lambda update: loop.call_soon_threadsafe(queue.put_nowait, (index, update))

    def _abort(self, request_ids: list[str]) -> None:
        self.runner.post(lambda engine: engine.abort(request_ids))

    # --- responses ------------------------------------------------------------------

    def _logprobs(self, token_ids: list[int], logprobs: list[float], *, chat: bool) -> dict[str, Any]:
        tokens = [self.tokenizer.decode([t]) for t in token_ids]
        if chat:
            return {"content": [
                {"token": tok, "logprob": lp, "bytes": list(tok.encode("utf-8")), "top_logprobs": []}
                for tok, lp in zip(tokens, logprobs, strict=True)
            ]}
        offsets, offset = [], 0
        for tok in tokens:
            offsets.append(offset)
            offset += len(tok)
        return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None, "text_offset": offsets}

    def _final(self, meta: dict[str, Any], choices: list[_Choice], n: int, *, chat: bool, logprobs: bool) -> dict[str, Any]:
        out = []
        for i, c in enumerate(choices):
            entry: dict[str, Any] = {"index": i, "finish_reason": c.finish_reason,
                                     "logprobs": self._logprobs(c.token_ids, c.logprobs, chat=chat) if logprobs else None}
            if chat:
                entry["message"] = {"role": "assistant", "content": c.text}
            else:
                entry["text"] = c.text
            out.append(entry)
        prompt_tokens = sum(c.usage[0] for c in choices[::n])  # once per prompt, not per sample
        completion_tokens = sum(c.usage[1] for c in choices)
        return {**meta, "choices": out, "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                                                  "total_tokens": prompt_tokens + completion_tokens}}

    async def _stream_events(
        self,
        queue: asyncio.Queue[tuple[int, SequenceUpdate]],
        total: int,
        n: int,
        meta: dict[str, Any],
        *,
        chat: bool,
        logprobs: bool,
        ids: list[str],
    ) -> AsyncIterator[str]:
        chunk_kind = "chat.completion.chunk" if chat else "text_completion"
        started: set[int] = set()
        done = 0
        try:
            while done < total:
                index, update = await queue.get()
                choice_index = index * n + update.sample_index
                finish = update.finish_reason.value if update.finish_reason is not None else None
                entry: dict[str, Any] = {"index": choice_index, "finish_reason": finish, "logprobs": None}
                if logprobs and update.token_ids:
                    entry["logprobs"] = self._logprobs(update.token_ids, update.logprobs, chat=chat)
                if chat:
                    delta: dict[str, Any] = {"content": update.text}
                    if choice_index not in started:
                        delta["role"] = "assistant"
                        started.add(choice_index)
                    entry["delta"] = delta
                else:
                    entry["text"] = update.text
                done += finish is not None
                yield f"data: {json.dumps({**meta, 'object': chunk_kind, 'choices': [entry]})}\n\n"
            yield "data: [DONE]\n\n"
        finally:
            self._abort(ids)


class OpenAIServer:
    """uvicorn serving ``OpenAIApi`` on its own thread (and event loop)."""

    def __init__(self, api: OpenAIApi, host: str, port: int) -> None:
        config = uvicorn.Config(api.app, host=host, port=port, log_level="warning", lifespan="off", access_log=False)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="openai-http", daemon=True)
        self.host = host

    def start(self, timeout_s: float = 30.0) -> OpenAIServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError("the OpenAI HTTP server failed to start (port in use?)")
            if time.monotonic() > deadline:
                raise TimeoutError("the OpenAI HTTP server did not start in time")
            time.sleep(0.01)
        return self

    @property
    def port(self) -> int:
        return self._server.servers[0].sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def stop(self, timeout_s: float = 5.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout_s)

