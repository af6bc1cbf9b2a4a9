"""The critic model behind an OpenAI-compatible chat completions endpoint.

Any such endpoint works: the project's inference service (the policy judging itself, as
in K2), vLLM's OpenAI server, or a hosted model. Errors become ``CriticUnavailable`` so the
caller can report UNAVAILABLE instead of inventing a verdict.
"""

from __future__ import annotations

from typing import Protocol

import openai


class CriticUnavailable(Exception):
    """The critic endpoint failed, timed out or returned no text."""


class Critic(Protocol):
    """What the comparison logic needs from a critic: a name and a chat completion."""

    @property
    def name(self) -> str: ...

    def complete(self, messages: list[dict[str, str]]) -> str: ...


class OpenAICritic:
    """A critic served at ``base_url`` (e.g. ``http://127.0.0.1:8000/v1``) as ``model``."""

    def __init__(self, base_url: str, model: str, api_key: str = "EMPTY", timeout_s: float = 60.0,
                 max_tokens: int = 1024, temperature: float = 0.0) -> None:
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "EMPTY", timeout=timeout_s, max_retries=1)
        self._model = model
        self._max_tokens = max_tokens
        self._temperature = temperature

    @property
    def name(self) -> str:
        return self._model

    def complete(self, messages: list[dict[str, str]]) -> str:
        try:
            completion = self._client.chat.completions.create(
                model=self._model, messages=messages,  # type: ignore[arg-type]
                max_tokens=self._max_tokens, temperature=self._temperature,
            )
        except openai.OpenAIError as error:
            raise CriticUnavailable(f"critic {self._model} failed: {type(error).__name__}: {error}") from None
        if not completion.choices or completion.choices[0].message.content is None:
            raise CriticUnavailable(f"critic {self._model} returned no text")
        return completion.choices[0].message.content

    def close(self) -> None:
        self._client.close()
