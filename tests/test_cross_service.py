"""Two services as real processes calling each other: auth, limits, errors and one trace."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.launcher import LocalCluster

TOKEN = "cross-service-token"
MAX_MESSAGE = 64 * 1024
SERVING = controller_pb2.HealthStatus.HEALTH_STATUS_SERVING


def start_pair(tmp_path: Path, controller_token: str = TOKEN) -> LocalCluster:
    config = tmp_path / "k2rl.yaml"
    config.write_text(yaml.safe_dump({
        "auth_token": TOKEN,
        "max_message_bytes": MAX_MESSAGE,
        "controller": {"trace_file": str(tmp_path / "controller.spans"), "auth_token": controller_token},
        "judge": {"trace_file": str(tmp_path / "judge.spans")},
    }))
    cluster = LocalCluster(("judge", "controller"), config, free_ports=True, log_dir=tmp_path / "logs")
    cluster.start()
    try:
        cluster.wait_until_serving(120)
    except Exception:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalCluster, Path]]:
    tmp_path = tmp_path_factory.mktemp("pair")
    cluster = start_pair(tmp_path)
    yield cluster, tmp_path
    codes = cluster.stop()
    assert codes == {"judge": 0, "controller": 0}


def controller_stub(cluster: LocalCluster, token: str | None, provider: TracerProvider | None = None):
    options = ClientOptions(token=token, max_message_bytes=1 << 20, tracer_provider=provider)
    return create_stub(controller_pb2_grpc.ControllerServiceStub, cluster.launched["controller"].address, options)


def read_spans(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_controller_calls_judge_with_auth_and_one_trace_spans_both(pair: tuple[LocalCluster, Path]) -> None:
    cluster, tmp_path = pair
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    stub = controller_stub(cluster, TOKEN, provider)
    try:
        with provider.get_tracer("test").start_as_current_span("user-request") as root:
            reply = stub.GetSystemStatus(controller_pb2.GetSystemStatusRequest(names=["judge"]), timeout=30)
        trace_id = f"{root.get_span_context().trace_id:032x}"
    finally:
        close_stub(stub)
    (judge,) = reply.dependencies
    assert judge.status == SERVING and reply.healthy
    assert judge.health_service == "k2rl.judge.v1.JudgeService"

    # Client spans end in a completion callback, so give the files a moment to catch up.
    deadline = time.monotonic() + 10
    while True:
        controller_spans = [s for s in read_spans(tmp_path / "controller.spans") if s["trace_id"] == trace_id]
        judge_spans = [s for s in read_spans(tmp_path / "judge.spans") if s["trace_id"] == trace_id]
        client_span_ids = {s["span_id"] for s in controller_spans if s["kind"] == "CLIENT"}
        test_client_ids = {f"{s.context.span_id:016x}" for s in exporter.get_finished_spans()
                           if s.kind is SpanKind.CLIENT}
        linked = bool(judge_spans) and all(s["parent_span_id"] in client_span_ids for s in judge_spans)
        if (linked and test_client_ids) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    server_span = next(s for s in controller_spans if s["kind"] == "SERVER")
    assert server_span["name"] == "k2rl.controller.v1.ControllerService/GetSystemStatus"
    assert server_span["parent_span_id"] in test_client_ids
    judge_names = {s["name"] for s in judge_spans}
    assert {"grpc.health.v1.Health/Check",
            "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"} <= judge_names
    assert all(s["parent_span_id"] in client_span_ids for s in judge_spans)
    assert {s["service"] for s in judge_spans} == {"k2rl-judge"}


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_call_without_the_token_is_unauthenticated(pair: tuple[LocalCluster, Path], token: str | None) -> None:
    cluster, _ = pair
    stub = controller_stub(cluster, token)
    try:
        with pytest.raises(grpc.RpcError) as error:
            stub.GetSystemStatus(controller_pb2.GetSystemStatusRequest(), timeout=10)
    finally:
        close_stub(stub)
    assert error.value.code() is grpc.StatusCode.UNAUTHENTICATED


def test_oversized_and_bad_requests_get_clear_errors_and_the_server_keeps_serving(
    pair: tuple[LocalCluster, Path],
) -> None:
    cluster, _ = pair
    stub = controller_stub(cluster, TOKEN)
    try:
        cases = [
            (controller_pb2.GetSystemStatusRequest(names=["x" * (2 * MAX_MESSAGE)]),
             grpc.StatusCode.RESOURCE_EXHAUSTED, ""),
            (controller_pb2.GetSystemStatusRequest(names=["no-such-service"]),
             grpc.StatusCode.INVALID_ARGUMENT, "unknown dependencies"),
            (controller_pb2.GetSystemStatusRequest(probe_timeout_ms=10**9),
             grpc.StatusCode.INVALID_ARGUMENT, "probe_timeout_ms"),
        ]
        for request, code, text in cases:
            with pytest.raises(grpc.RpcError) as error:
                stub.GetSystemStatus(request, timeout=10)
            assert error.value.code() is code
            assert text in (error.value.details() or "")
        reply = stub.GetSystemStatus(controller_pb2.GetSystemStatusRequest(names=["judge"]), timeout=30)
        assert reply.healthy
    finally:
        close_stub(stub)
    assert cluster.first_exited() is None


def test_token_mismatch_between_services_is_reported_with_a_hint(tmp_path: Path) -> None:
    cluster = start_pair(tmp_path, controller_token="a-different-token")
    try:
        stub = controller_stub(cluster, "a-different-token")
        try:
            reply = stub.GetSystemStatus(controller_pb2.GetSystemStatusRequest(names=["judge"]), timeout=30)
        finally:
            close_stub(stub)
    finally:
        cluster.stop()
    (judge,) = reply.dependencies
    assert judge.status == controller_pb2.HealthStatus.HEALTH_STATUS_UNAUTHENTICATED
    assert not reply.healthy
    assert "K2RL_AUTH_TOKEN" in judge.error.hint
