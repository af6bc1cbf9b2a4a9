"""The LLM client against the replay server (a real HTTP server): replies, tool calls, token
accounting, retries of transient failures, no retry of bad requests, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from k2rl.synth.llm import LLMClient, LLMConfig, LLMError
from k2rl.synth.testing import Cassette, replay_server

CASSETTE = Cassette.from_dict({"rules": [
    {"name": "call", "last_contains": "weather", "replies": [
        {"content": "", "tool_calls": [{"id": "c1", "type": "function",
                                        "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]}]},
    {"name": "echo", "replies": [{"content": "one"}, {"content": "two"}, {"content": "three"}]},
]})


def config(base_url: str, **changes) -> LLMConfig:
    return LLMConfig(base_url=base_url, model="replay", max_retries=2, initial_backoff_s=0.01, max_backoff_s=0.05,
                     timeout_s=10, **changes)


def test_replies_tool_calls_and_token_accounting() -> None:
    async def scenario(base_url: str) -> None:
        client = LLMClient(config(base_url))
        first = await client.complete([{"role": "user", "content": "hello"}])
        again = await client.complete([{"role": "user", "content": "hello"}])
        assert first.content in {"one", "two", "three"} and again.content == first.content  # replay is a function of the request
        call = await client.complete([{"role": "user", "content": "weather in Oslo?"}])
        assert call.tool_calls[0]["function"] == {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}
        assert await client.chat([{"role": "user", "content": "hi"}]) in {"one", "two", "three"}
        assert client.usage.calls == 4 and client.usage.prompt_tokens == len("hello") * 2 + len("weather in Oslo?") + 2
        assert client.usage.completion_tokens > 0 and client.usage.retries == 0
        await client.close()

    with replay_server(CASSETTE) as server:
        asyncio.run(scenario(server.base_url))
        assert server.hits == {"echo": 3, "call": 1}


def test_unmatched_request_is_a_clear_error_without_retries() -> None:
    only_weather = Cassette.from_dict({"rules": [CASSETTE.rules[0].__dict__]})

    async def scenario(base_url: str) -> LLMClient:
        client = LLMClient(config(base_url))
        with pytest.raises(LLMError, match="no recorded reply matches"):
            await client.complete([{"role": "user", "content": "unrelated"}])
        await client.close()
        return client

    with replay_server(only_weather) as server:
        client = asyncio.run(scenario(server.base_url))
        assert server.unmatched == 1 and client.usage.failures == 1 and client.usage.retries == 0


class FlakyEndpoint:
    """Answers 503 to the first ``failures`` requests, then a completion; counts requests in flight."""

    def __init__(self, failures: int, delay_s: float = 0.0) -> None:
        self.failures, self.delay_s = failures, delay_s
        self.requests = 0
        self.in_flight = self.peak = 0
        self.lock = threading.Lock()

    def handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers["Content-Length"]))
                with endpoint.lock:
                    endpoint.requests += 1
                    fail = endpoint.requests <= endpoint.failures
                    endpoint.in_flight += 1
                    endpoint.peak = max(endpoint.peak, endpoint.in_flight)
                threading.Event().wait(endpoint.delay_s)
                with endpoint.lock:
                    endpoint.in_flight -= 1
                body = (b'{"error": {"message": "overloaded"}}' if fail else
                        b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [{"index": 0,'
                        b' "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}]}')
                self.send_response(503 if fail else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


def serve(endpoint: FlakyEndpoint) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), endpoint.handler())
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/v1"


@pytest.mark.parametrize(("failures", "succeeds"), [(2, True), (3, False)])
def test_transient_failures_are_retried_with_backoff(failures: int, succeeds: bool) -> None:
    endpoint = FlakyEndpoint(failures)
    server, base_url = serve(endpoint)

    async def scenario() -> LLMClient:
        client = LLMClient(config(base_url))
        if succeeds:
            assert (await client.complete([{"role": "user", "content": "x"}])).content == "ok"
        else:
            with pytest.raises(LLMError, match="gave up after 3 attempts"):
                await client.complete([{"role": "user", "content": "x"}])
        await client.close()
        return client

    try:
        client = asyncio.run(scenario())
    finally:
        server.shutdown()
    assert endpoint.requests == 3 and client.usage.retries == 2
    assert client.usage.failures == (0 if succeeds else 1)


def test_concurrency_is_bounded() -> None:
    endpoint = FlakyEndpoint(0, delay_s=0.05)
    server, base_url = serve(endpoint)

    async def scenario() -> None:
        client = LLMClient(config(base_url, max_concurrency=3))
        replies = await asyncio.gather(*(client.complete([{"role": "user", "content": str(i)}]) for i in range(12)))
        assert [r.content for r in replies] == ["ok"] * 12
        await client.close()

    try:
        asyncio.run(scenario())
    finally:
        server.shutdown()
    assert endpoint.requests == 12 and endpoint.peak <= 3


def test_config_rejects_unknown_keys_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown llm keys"):
        LLMConfig.from_dict({"modle": "x"})
    with pytest.raises(ValueError, match="max_concurrency"):
        LLMConfig(max_concurrency=0)
    assert LLMConfig.from_dict({"model": "a"}, LLMConfig(timeout_s=5)).timeout_s == 5
