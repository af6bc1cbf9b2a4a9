"""Test double: an OpenAI-compatible server that replays recorded chat completions.

``replay_server(cassette)`` runs a real HTTP server on loopback answering
``POST /v1/chat/completions`` (and ``GET /v1/models``) from a *cassette*: recorded replies
grouped under rules that say which requests they answer. It exists so the pipeline's tests
and ``bench/synth.py`` exercise the real client, prompts, parsing and concurrency without a
model. It is a test double, not a model server; never point production runs at it.

A cassette is JSON ``{"rules": [rule, ...]}``; a rule is::

    {"name": "agent-final", "system_contains": "You are", "last_role": "tool",
     "last_contains": "", "replies": [{"content": "...", "tool_calls": [...]}, ...]}

The first rule whose conditions all hold answers (``system_contains``: substring of the
first system message; ``last_role`` / ``last_contains``: role and substring of the last
message). Among its replies one is picked by a hash of the request's messages, so the same
request always gets the same reply whatever the order or concurrency of requests.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ReplayRule:
    name: str
    replies: list[dict[str, Any]]
    system_contains: str = ""
    last_role: str | None = None
    last_contains: str = ""

    def matches(self, messages: list[dict[str, Any]]) -> bool:
        system = next((str(m.get("content") or "") for m in messages if m.get("role") == "system"), "")
        last = messages[-1] if messages else {}
        return (self.system_contains in system
                and (self.last_role is None or last.get("role") == self.last_role)
                and self.last_contains in str(last.get("content") or ""))


@dataclass
class Cassette:
    rules: list[ReplayRule]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cassette:
        rules = []
        for index, raw in enumerate(data.get("rules", [])):
            if not raw.get("replies"):
                raise ValueError(f"cassette rule #{index} ({raw.get('name', '?')}) has no replies")
            rules.append(ReplayRule(**raw))
        return cls(rules)

    @classmethod
    def load(cls, path: str | Path) -> Cassette:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def answer(self, messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
        for rule in self.rules:
            if rule.matches(messages):
                digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).digest()
                return rule.name, rule.replies[int.from_bytes(digest[:8], "big") % len(rule.replies)]
        return None


def demo_cassette() -> Cassette:
    """The recorded replies that match ``configs/synth-demo.yaml``'s prompts."""
    with resources.as_file(resources.files("k2rl.synth") / "cassettes" / "demo.json") as path:
        return Cassette.load(path)


@dataclass
class ReplayServer:
    """The running double: base URL, per-rule hit counts, and the request bodies it saw."""

    base_url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    requests: list[dict[str, Any]] = field(default_factory=list)
    unmatched: int = 0


def _handler(cassette: Cassette, state: ReplayServer, lock: threading.Lock,
             latency_s: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.rstrip("/") != "/v1/models":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            self._send(200, {"object": "list", "data": [{"id": "replay", "object": "model"}]})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            messages = body.get("messages", [])
            found = cassette.answer(messages)
            with lock:
                state.requests.append(body)
                if found is None:
                    state.unmatched += 1
                else:
                    state.hits[found[0]] += 1
            if found is None:
                last = str(messages[-1].get("content", ""))[:80] if messages else ""
                self._send(400, {"error": {"message": f"no recorded reply matches this request (last: {last!r})",
                                           "type": "invalid_request_error"}})
                return
            if latency_s:
                time.sleep(latency_s)
            self._send(200, _completion(body.get("model", "replay"), found[1], messages))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def _completion(model: str, reply: dict[str, Any], messages: list[dict[str, Any]]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.get("content", "")}
    if reply.get("tool_calls"):
        message["tool_calls"] = reply["tool_calls"]
    prompt_chars = sum(len(str(m.get("content") or "")) for m in messages)
    completion_chars = len(message["content"] or "") + len(json.dumps(reply.get("tool_calls", [])))
    return {
        "id": "chatcmpl-replay", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": message,
                     "finish_reason": "tool_calls" if reply.get("tool_calls") else "stop"}],
        # Byte counts stand in for tokens, so token accounting has something real to sum.
        "usage": {"prompt_tokens": prompt_chars, "completion_tokens": completion_chars,
                  "total_tokens": prompt_chars + completion_chars},
    }


@contextmanager
def replay_server(cassette: Cassette | None = None, *, latency_s: float = 0.0) -> Iterator[ReplayServer]:
    """Serve ``cassette`` (default: the demo one) on a free loopback port until the block exits.

    ``latency_s`` delays every reply, standing in for model time (requests overlap: one
    thread per connection).
    """
    state = ReplayServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(cassette or demo_cassette(), state,
                                                            threading.Lock(), latency_s))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_port}/v1"
    thread = threading.Thread(target=server.serve_forever, name="replay-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

