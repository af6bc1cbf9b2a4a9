"""ServiceRuntime end to end in-process: a raw-bytes echo service behind the real runtime."""

from __future__ import annotations

import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from k2rl.core.client import ClientOptions, open_channel
from k2rl.core.config import ServiceSettings, load_settings
from k2rl.core.errors import FailedPrecondition
from k2rl.core.net import free_loopback_port
from k2rl.core.server import ServicerBinding, ServiceRuntime, ServiceSpec
from k2rl.core.testing import require_binary

ECHO_SERVICE = "k2rl.test.v1.EchoService"
TOKEN = "s3cret-token"


RELEASE = threading.Event()


def _echo(request: bytes, context: grpc.ServicerContext) -> bytes:
    if request == b"wait":
        RELEASE.wait(timeout=10)
    if request == b"precondition":
        raise FailedPrecondition("engine is asleep; call WakeUp first")
    if request == b"crash":
        raise ZeroDivisionError("boom")
    if request == b"abort":
        context.abort(grpc.StatusCode.NOT_FOUND, "no such run")
    return request


def _count(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for i in range(int(request)):
        if i == 2 and int(request) > 5:
            raise ValueError("stream broke")
        yield str(i).encode()


def _identity(x: bytes) -> bytes:
    return x


ECHO_HANDLER = grpc.method_handlers_generic_handler(ECHO_SERVICE, {
    "Echo": grpc.unary_unary_rpc_method_handler(_echo, _identity, _identity),
    "Count": grpc.unary_stream_rpc_method_handler(_count, _identity, _identity),
})


def _build(_context: object) -> list[ServicerBinding]:
    return [ServicerBinding(lambda _s, server: server.add_generic_rpc_handlers((ECHO_HANDLER,)), None, ECHO_SERVICE)]


SPEC = ServiceSpec("judge", "echo for tests", ServiceSettings, _build)


def start_runtime(**overrides: object) -> ServiceRuntime:
    settings = load_settings(ServiceSettings, "judge", None, {
        "port": free_loopback_port(), "metrics_port": free_loopback_port(),
        "max_message_bytes": 64 * 1024, "grace_period_s": 1.0, **overrides,
    })
    runtime = ServiceRuntime(SPEC, settings)
    runtime.start()
    return runtime


@pytest.fixture
def runtime() -> Iterator[ServiceRuntime]:
    rt = start_runtime(auth_token=TOKEN)
    yield rt
    rt.stop(0)


def echo(channel: grpc.Channel, payload: bytes, **kwargs: object) -> bytes:
    return channel.unary_unary(f"/{ECHO_SERVICE}/Echo")(payload, timeout=5, **kwargs)


def test_authenticated_call_round_trips_and_health_needs_no_token(runtime: ServiceRuntime) -> None:
    address = runtime.settings.address
    with open_channel(address, ClientOptions(token=TOKEN)) as channel:
        assert echo(channel, b"hello") == b"hello"
    with open_channel(address, ClientOptions()) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        per_service = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=ECHO_SERVICE), timeout=5)
        assert per_service.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("token", [None, "wrong"])
def test_missing_or_wrong_token_is_unauthenticated(runtime: ServiceRuntime, token: str | None) -> None:
    with open_channel(runtime.settings.address, ClientOptions(token=token)) as channel:
        with pytest.raises(grpc.RpcError) as error:
            echo(channel, b"hello")
        assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer" in error.value.details()


def test_errors_map_to_actionable_status_codes(runtime: ServiceRuntime) -> None:
    with open_channel(runtime.settings.address, ClientOptions(token=TOKEN)) as channel:
        cases = {
            b"precondition": (grpc.StatusCode.FAILED_PRECONDITION, "WakeUp"),
            b"crash": (grpc.StatusCode.INTERNAL, "ZeroDivisionError: boom (trace_id="),
            b"abort": (grpc.StatusCode.NOT_FOUND, "no such run"),
        }
        for payload, (code, text) in cases.items():
            with pytest.raises(grpc.RpcError) as error:
                echo(channel, payload)
            assert error.value.code() is code
            assert text in error.value.details()
        assert echo(channel, b"still serving") == b"still serving"


def test_streaming_and_errors_mid_stream(runtime: ServiceRuntime) -> None:
    with open_channel(runtime.settings.address, ClientOptions(token=TOKEN)) as channel:
        count = channel.unary_stream(f"/{ECHO_SERVICE}/Count")
        assert list(count(b"4", timeout=5)) == [b"0", b"1", b"2", b"3"]
        received = []
        with pytest.raises(grpc.RpcError) as error:
            for item in count(b"9", timeout=5):
                received.append(item)
        assert received == [b"0", b"1"]
        assert error.value.code() is grpc.StatusCode.INTERNAL


def test_oversized_message_is_resource_exhausted_and_server_keeps_serving(runtime: ServiceRuntime) -> None:
    with open_channel(runtime.settings.address, ClientOptions(token=TOKEN, max_message_bytes=1 << 20)) as channel:
        with pytest.raises(grpc.RpcError) as error:
            echo(channel, b"x" * (128 * 1024))
        assert error.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert echo(channel, b"ok") == b"ok"


def test_reflection_lists_the_service_and_health(runtime: ServiceRuntime) -> None:
    with open_channel(runtime.settings.address, ClientOptions(token=TOKEN)) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        names = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {ECHO_SERVICE, "grpc.health.v1.Health"} <= names


def scrape(runtime: ServiceRuntime) -> str:
    url = f"http://127.0.0.1:{runtime.settings.prometheus_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def test_metrics_count_rpcs_by_code(runtime: ServiceRuntime) -> None:
    with open_channel(runtime.settings.address, ClientOptions(token=TOKEN)) as channel:
        for _ in range(3):
            echo(channel, b"hi")
        with pytest.raises(grpc.RpcError):
            echo(channel, b"precondition")
    text = scrape(runtime)
    labels = 'grpc_method="Echo",grpc_service="k2rl.test.v1.EchoService",service="judge"'
    assert f'k2rl_grpc_server_handled_total{{grpc_code="OK",{labels}}} 3.0' in text
    assert f'k2rl_grpc_server_handled_total{{grpc_code="FAILED_PRECONDITION",{labels}}} 1.0' in text
    assert f"k2rl_grpc_server_handling_seconds_count{{{labels}}} 4.0" in text
    assert 'k2rl_service_serving{service="judge"} 1.0' in text


def test_stop_reports_not_serving_then_closes() -> None:
    rt = start_runtime()
    address = rt.settings.address
    rt.stop(0.5)
    with open_channel(address, ClientOptions(max_attempts=1)) as channel:
        with pytest.raises(grpc.RpcError) as error:
            echo(channel, b"late")
        assert error.value.code() is grpc.StatusCode.UNAVAILABLE


def test_port_in_use_fails_clearly() -> None:
    rt = start_runtime()
    try:
        with pytest.raises(OSError, match="cannot bind"):
            start_runtime(port=rt.settings.grpc_port)
    finally:
        rt.stop(0)


def make_self_signed_cert(tmp_path: Path) -> tuple[Path, Path]:
    openssl = require_binary("openssl", "openssl")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_with_auth(tmp_path: Path) -> None:
    cert, key = make_self_signed_cert(tmp_path)
    rt = start_runtime(tls_cert_file=cert, tls_key_file=key, auth_token=TOKEN)
    try:
        options = ClientOptions(token=TOKEN, tls_ca_file=cert)
        with open_channel(f"localhost:{rt.bound_port}", options) as channel:
            assert echo(channel, b"secure") == b"secure"
        with open_channel(rt.settings.address, ClientOptions(token=TOKEN, max_attempts=1)) as plaintext:
            with pytest.raises(grpc.RpcError) as error:
                echo(plaintext, b"plain")
            assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    finally:
        rt.stop(0)


def test_future_calls_do_not_block_the_caller(runtime: ServiceRuntime) -> None:
    RELEASE.clear()
    with open_channel(runtime.settings.address, ClientOptions(token=TOKEN)) as channel:
        future = channel.unary_unary(f"/{ECHO_SERVICE}/Echo").future(b"wait", timeout=10)
        assert not future.done()  # the handler is still waiting for RELEASE
        RELEASE.set()
        assert future.result() == b"wait"
