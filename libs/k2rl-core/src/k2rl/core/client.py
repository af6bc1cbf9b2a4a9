"""Typed client factory: one call gives a stub with auth, tracing, deadlines and retries."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from opentelemetry import trace
from opentelemetry.trace import TracerProvider

from k2rl.core.config import MiB, ServiceSettings
from k2rl.core.interceptors import ClientInterceptor

StubT = TypeVar("StubT")

# gRPC's own retry machinery: only UNAVAILABLE (server restarting, connection refused) is
# retried, because it is the one code that guarantees the server did not act on the call.
RETRY_STATUS_CODES = ("UNAVAILABLE",)


@dataclass(frozen=True)
class ClientOptions:
    """How a client reaches one service."""

    token: str | None = None
    tls_ca_file: Path | None = None
    tls_server_name: str | None = None
    default_timeout_s: float | None = 30.0
    max_message_bytes: int = 64 * MiB
    max_attempts: int = 4
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    tracer_provider: TracerProvider | None = field(default=None, compare=False)

    @classmethod
    def from_settings(cls, settings: ServiceSettings, tracer_provider: TracerProvider | None = None) -> ClientOptions:
        return cls(
            token=settings.token(),
            tls_ca_file=settings.tls_ca_file,
            default_timeout_s=settings.client_timeout_s,
            max_message_bytes=settings.max_message_bytes,
            tracer_provider=tracer_provider,
        )


def service_config(options: ClientOptions) -> str:
    """JSON service config enabling gRPC retries with exponential backoff for every method."""
    if options.max_attempts <= 1:  # gRPC rejects a retryPolicy with fewer than 2 attempts
        return json.dumps({"methodConfig": [{"name": [{}]}]})
    return json.dumps({
        "methodConfig": [{
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": options.max_attempts,
                "initialBackoff": f"{options.initial_backoff_s}s",
                "maxBackoff": f"{options.max_backoff_s}s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": list(RETRY_STATUS_CODES),
            },
        }]
    })


def open_channel(target: str, options: ClientOptions | None = None) -> grpc.Channel:
    """A channel to ``target`` (host:port) with k2rl's interceptors and limits."""
    options = options or ClientOptions()
    channel_options = [
        ("grpc.max_send_message_length", options.max_message_bytes),
        ("grpc.max_receive_message_length", options.max_message_bytes),
        ("grpc.enable_retries", 1),
        ("grpc.service_config", service_config(options)),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 0),
    ]
    if options.tls_ca_file is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=options.tls_ca_file.read_bytes())
        if options.tls_server_name:
            channel_options.append(("grpc.ssl_target_name_override", options.tls_server_name))
        channel = grpc.secure_channel(target, credentials, options=channel_options)
    else:
        channel = grpc.insecure_channel(target, options=channel_options)
    tracer = (options.tracer_provider or trace.get_tracer_provider()).get_tracer("k2rl.client")
    return grpc.intercept_channel(
        channel, ClientInterceptor(tracer, options.token, options.default_timeout_s)
    )


def create_stub(stub_type: Callable[[grpc.Channel], StubT], target: str,
                options: ClientOptions | None = None) -> StubT:
    """``create_stub(trainer_pb2_grpc.TrainerServiceStub, "127.0.0.1:50051")`` -> typed stub.

    The stub keeps its channel alive; close it with ``close_stub(stub)`` when done.
    """
    channel = open_channel(target, options)
    stub = stub_type(channel)
    stub._k2rl_channel = channel
    return stub


def close_stub(stub: object) -> None:
    channel = getattr(stub, "_k2rl_channel", None)
    if channel is not None:
        channel.close()
