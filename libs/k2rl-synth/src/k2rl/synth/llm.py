"""OpenAI-compatible chat client for every LLM role of the pipeline.

Any endpoint that speaks ``POST /v1/chat/completions`` works: the project's inference
service, vLLM, a hosted model, or the replay server of ``k2rl.synth.testing``. The client
bounds concurrency (a semaphore shared by all roles using it), retries transient failures
(connection errors, timeouts, 429 and 5xx) with exponential backoff and jitter, puts a
deadline on every attempt, and counts tokens and calls.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import openai

ChatFn = Callable[[list[dict[str, Any]]], Awaitable[str]]

# Failures a retry can fix; anything else (400, 401, 404, ...) is the request's fault.
_TRANSIENT = (openai.APIConnectionError, openai.APITimeoutError, openai.RateLimitError,
              openai.InternalServerError)


class LLMError(Exception):
    """A completion failed for good (non-transient error, or retries exhausted)."""


@dataclass(frozen=True)
class LLMConfig:
    """Where the model is and how hard to push it; YAML ``llm:`` sections map onto this."""

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "k2-nano"
    api_key: str | None = None
    api_key_env: str = "OPENAI_API_KEY"  # read when api_key is not given
    max_concurrency: int = 8
    timeout_s: float = 60.0
    max_retries: int = 3
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    temperature: float = 0.7
    max_tokens: int = 512

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError(f"llm.max_concurrency must be >= 1, got {self.max_concurrency}")
        if self.timeout_s <= 0:
            raise ValueError(f"llm.timeout_s must be > 0, got {self.timeout_s}")
        if self.max_retries < 0:
            raise ValueError(f"llm.max_retries must be >= 0, got {self.max_retries}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], defaults: LLMConfig | None = None) -> LLMConfig:
        """``data`` overrides ``defaults`` (so roles inherit the shared ``llm:`` section)."""
        base = (defaults or cls()).__dict__ | {}
        unknown = sorted(set(data) - set(base))
        if unknown:
            raise ValueError(f"unknown llm keys {unknown}; allowed: {sorted(base)}")
        return cls(**(base | data))

    def resolved_api_key(self) -> str:
        # Local endpoints need no key, but the openai client insists on a non-empty one.
        return self.api_key or os.environ.get(self.api_key_env) or "EMPTY"


@dataclass
class TokenUsage:
    """Running totals over all calls of one client (one event loop: no lock needed)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retries: int = 0
    failures: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"calls": self.calls, "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens, "total_tokens": self.total_tokens,
                "retries": self.retries, "failures": self.failures}


@dataclass(frozen=True)
class Completion:
    """One assistant reply: text plus any structured (OpenAI-style) tool calls."""

    content: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str = ""


class LLMClient:
    """Async chat completions against one OpenAI-compatible endpoint."""

    def __init__(self, config: LLMConfig, *, seed: int = 0) -> None:
        self.config = config
        self.usage = TokenUsage()
        self._client = openai.AsyncOpenAI(base_url=config.base_url, api_key=config.resolved_api_key(),
                                          timeout=config.timeout_s, max_retries=0)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._jitter = random.Random(seed)

    async def complete(self, messages: list[dict[str, Any]], *, tools: list[dict[str, Any]] | None = None,
                       temperature: float | None = None, max_tokens: int | None = None,
                       seed: int | None = None) -> Completion:
        """One completion, retried on transient failures; raises LLMError when it gives up."""
        request: dict[str, Any] = {
            "model": self.config.model, "messages": messages,
            "temperature": self.config.temperature if temperature is None else temperature,
            "max_tokens": max_tokens or self.config.max_tokens,
        }
        if tools:
            request["tools"] = tools
        if seed is not None:
            request["seed"] = seed
        for attempt in range(self.config.max_retries + 1):
            try:
                async with self._slots:
                    reply = await asyncio.wait_for(self._client.chat.completions.create(**request),
                                                   self.config.timeout_s)
                return self._record(reply)
            except (TimeoutError, *_TRANSIENT) as error:
                if attempt == self.config.max_retries:
                    self.usage.failures += 1
                    raise LLMError(f"{self.config.model} at {self.config.base_url}: gave up after "
                                   f"{attempt + 1} attempts: {type(error).__name__}: {error}") from None
                self.usage.retries += 1
                await asyncio.sleep(self._backoff(attempt))
            except openai.OpenAIError as error:
                self.usage.failures += 1
                raise LLMError(f"{self.config.model} at {self.config.base_url}: "
                               f"{type(error).__name__}: {error}") from None
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self.config.max_backoff_s, self.config.initial_backoff_s * 2 ** attempt)
        return ceiling * (0.5 + 0.5 * self._jitter.random())

    def _record(self, reply: Any) -> Completion:
        self.usage.calls += 1
        if reply.usage is not None:
            self.usage.prompt_tokens += reply.usage.prompt_tokens or 0
            self.usage.completion_tokens += reply.usage.completion_tokens or 0
        if not reply.choices:
            raise LLMError(f"{self.config.model} returned no choices")
        choice = reply.choices[0]
        calls = [call.model_dump() for call in (choice.message.tool_calls or [])]
        return Completion(choice.message.content or "", calls, choice.finish_reason or "")

    async def chat(self, messages: list[dict[str, Any]]) -> str:
        """The ``ChatFn`` shape (messages in, assistant text out) that stage 1 takes."""
        return (await self.complete(messages)).content

    async def close(self) -> None:
        await self._client.close()
