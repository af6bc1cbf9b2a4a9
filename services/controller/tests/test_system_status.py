"""GetSystemStatus against services running in-process: serving, down, wrong token, wrong service."""

from pathlib import Path

import grpc
import pytest

from k2rl.controller.service import SERVICE as CONTROLLER
from k2rl.controller.system_status import probe_dependencies, redact
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.net import free_loopback_port
from k2rl.core.server import load_service
from k2rl.core.testing import assert_serves_contract, serve_in_process

SERVING = controller_pb2.HealthStatus.HEALTH_STATUS_SERVING


def status(controller_address: str, token: str | None, names: list[str]) -> controller_pb2.GetSystemStatusResponse:
    stub = create_stub(controller_pb2_grpc.ControllerServiceStub, controller_address, ClientOptions(token=token))
    try:
        return stub.GetSystemStatus(controller_pb2.GetSystemStatusRequest(names=names, probe_timeout_ms=1000),
                                    timeout=10)
    finally:
        close_stub(stub)


def test_controller_serves_its_contract() -> None:
    with serve_in_process(CONTROLLER) as runtime:
        assert_serves_contract(runtime, "k2rl.controller.v1.ControllerService")


def test_reports_serving_down_and_misplaced_dependencies(tmp_path: Path) -> None:
    judge_spec = load_service("judge")
    down = f"127.0.0.1:{free_loopback_port()}"
    with serve_in_process(judge_spec, auth_token="t") as judge:
        dependencies = {"judge": judge.settings.address, "sandbox": down,
                        "trainer": judge.settings.address}  # judge answers where trainer should be
        with serve_in_process(CONTROLLER, auth_token="t", dependencies=dependencies,
                              state_url=f"sqlite:///{tmp_path}/state.db") as controller:
            reply = status(controller.settings.address, "t", [])
    by_name = {d.name: d for d in reply.dependencies}
    assert [d.name for d in reply.dependencies] == ["judge", "sandbox", "state_store", "trainer"]
    assert by_name["judge"].status == SERVING
    assert by_name["state_store"].status == SERVING
    assert by_name["sandbox"].status == controller_pb2.HealthStatus.HEALTH_STATUS_UNREACHABLE
    assert by_name["sandbox"].error.retryable and "running" in by_name["sandbox"].error.hint
    assert by_name["trainer"].status == controller_pb2.HealthStatus.HEALTH_STATUS_SERVICE_UNKNOWN
    assert not reply.healthy


def test_unreachable_state_store_is_reported(tmp_path: Path) -> None:
    probes = probe_dependencies({}, ClientOptions(), 1.0, f"redis://user:pw@127.0.0.1:{free_loopback_port()}/0",
                                ["state_store"])
    (store,) = probes
    assert store.status == "UNREACHABLE"
    assert "pw" not in store.address and "***@" in store.address


def test_unknown_dependency_name_is_invalid_argument() -> None:
    with serve_in_process(CONTROLLER) as controller:
        with pytest.raises(grpc.RpcError) as error:
            status(controller.settings.address, None, ["judg"])
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "judg" in error.value.details()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://:secret@host:6379/0", "redis://***@host:6379/0"),
    ("redis://host:6379/0", "redis://host:6379/0"),
    ("sqlite:///tmp/x.db", "sqlite:///tmp/x.db"),
])
def test_redact_hides_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown
