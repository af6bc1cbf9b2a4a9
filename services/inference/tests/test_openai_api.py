"""The OpenAI-compatible HTTP API, driven by the real ``openai`` client against the service."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from k2rl.core.testing import free_loopback_port, serve_in_process
from k2rl.inference.service import SERVICE

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def client() -> Iterator[openai.OpenAI]:
    port = free_loopback_port()
    with serve_in_process(SERVICE, http_port=port, num_kv_blocks=64, block_size=8):
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60) as c:
            yield c


def test_models_lists_the_served_model(client) -> None:
    assert [m.id for m in client.models.list().data] == ["k2-nano"]


def test_completion_with_n_seed_logprobs_and_stop(client) -> None:
    first = client.completions.create(model="k2-nano", prompt="Hello", max_tokens=6, n=2, seed=4, logprobs=1,
                                      extra_body={"ignore_eos": True})
    again = client.completions.create(model="k2-nano", prompt="Hello", max_tokens=6, n=2, seed=4,
                                      extra_body={"ignore_eos": True})
    assert [c.text for c in first.choices] == [c.text for c in again.choices]
    assert [c.index for c in first.choices] == [0, 1] and first.choices[0].text != first.choices[1].text
    assert all(c.finish_reason == "length" for c in first.choices)
    lp = first.choices[0].logprobs
    assert len(lp.token_logprobs) == 6 and all(x <= 0 for x in lp.token_logprobs)
    assert first.usage.completion_tokens == 12 and first.usage.prompt_tokens == 5
    greedy = client.completions.create(model="k2-nano", prompt="Hello", max_tokens=8, temperature=0,
                                       extra_body={"ignore_eos": True}).choices[0].text
    stop = greedy[2:4]
    stopped = client.completions.create(model="k2-nano", prompt="Hello", max_tokens=8, temperature=0, stop=[stop],
                                        extra_body={"ignore_eos": True}).choices[0]
    assert stopped.finish_reason == "stop" and stopped.text == greedy[: greedy.index(stop)]


def test_chat_completion_and_streaming(client) -> None:
    messages = [{"role": "user", "content": "Say something."}]
    full = client.chat.completions.create(model="k2-nano", messages=messages, max_tokens=5, temperature=0,
                                          logprobs=True, extra_body={"ignore_eos": True})
    choice = full.choices[0]
    assert choice.message.role == "assistant" and len(choice.logprobs.content) == 5
    chunks = list(client.chat.completions.create(model="k2-nano", messages=messages, max_tokens=5, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == choice.message.content
    assert chunks[-1].choices[0].finish_reason == "length"


def test_errors_come_back_as_openai_errors(client) -> None:
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="k2-nano", prompt="x", max_tokens=2, top_p=0.0)
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="other", prompt="x", max_tokens=2)
