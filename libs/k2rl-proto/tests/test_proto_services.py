"""Every service exposes exactly the agreed RPCs, with the agreed streaming shapes, and the
generated stubs and servicers work end to end over a real gRPC channel."""

from __future__ import annotations

import importlib
import importlib.util
from concurrent import futures
from pathlib import Path
from types import ModuleType

import grpc
import pytest

SRC = Path(__file__).resolve().parents[3] / "libs" / "k2rl-proto" / "src"

UNARY = "unary_unary"
SERVER_STREAM = "unary_stream"
CLIENT_STREAM = "stream_unary"
BIDI = "stream_stream"

# package -> (service, {rpc: shape}). The contract later issues implement; changing it is a
# deliberate act that updates this table too.
EXPECTED: dict[str, tuple[str, dict[str, str]]] = {
    "trainer": (
        "TrainerService",
        {
            "TrainStep": CLIENT_STREAM,
            "Offload": UNARY,
            "Onload": UNARY,
            "PublishWeights": UNARY,
            "SaveCheckpoint": UNARY,
            "LoadCheckpoint": UNARY,
            "GetState": UNARY,
        },
    ),
    "inference": (
        "InferenceService",
        {
            "Generate": SERVER_STREAM,
            "Abort": UNARY,
            "Sleep": UNARY,
            "WakeUp": UNARY,
            "UpdateWeights": BIDI,
            "GetModelInfo": UNARY,
            "GetStats": UNARY,
        },
    ),
    "checkpoint_engine": (
        "CheckpointEngineService",
        {
            "RegisterWorker": UNARY,
            "Heartbeat": UNARY,
            "DeregisterWorker": UNARY,
            "PublishVersion": UNARY,
            "GetVersion": UNARY,
            "GetShardPlan": UNARY,
            "WaitForVersion": SERVER_STREAM,
            "ReportUpdate": UNARY,
            "GetVersionPlan": UNARY,
            "ReportVersionProgress": UNARY,
        },
    ),
    "controller": (
        "ControllerService",
        {
            "StartRun": UNARY,
            "GetRun": UNARY,
            "ListRuns": UNARY,
            "StopRun": UNARY,
            "ListIterations": UNARY,
            "WatchRun": SERVER_STREAM,
            "GetSystemStatus": UNARY,
        },
    ),
    "sandbox": (
        "SandboxService",
        {
            "Execute": UNARY,
            "ExecuteBatch": UNARY,
            "CreateSession": UNARY,
            "CloseSession": UNARY,
            "ReadFile": UNARY,
            "WriteFile": UNARY,
            "GetPoolStats": UNARY,
        },
    ),
    "judge": (
        "JudgeService",
        {
            "Score": UNARY,
            "ScoreBatch": UNARY,
            "Compare": UNARY,
            "ExportCriticData": UNARY,
        },
    ),
}


def _modules(package: str) -> tuple[ModuleType, ModuleType]:
    pb2 = importlib.import_module(f"k2rl.{package}.v1.{package}_pb2")
    pb2_grpc = importlib.import_module(f"k2rl.{package}.v1.{package}_pb2_grpc")
    for module in (pb2, pb2_grpc):
        origin = Path(module.__file__ or "").resolve()
        assert SRC in origin.parents, f"{module.__name__} imported from {origin}, not {SRC}"
    return pb2, pb2_grpc


def _shape(method) -> str:
    return {
        (False, False): UNARY,
        (False, True): SERVER_STREAM,
        (True, False): CLIENT_STREAM,
        (True, True): BIDI,
    }[(method.client_streaming, method.server_streaming)]


def test_only_the_expected_services_exist() -> None:
    generated = sorted(
        p.name.removesuffix("_pb2_grpc.py") for p in (SRC / "k2rl").rglob("*_pb2_grpc.py")
    )
    assert generated == sorted(EXPECTED)


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_service_package_stays_a_namespace(package: str) -> None:
    """k2rl.<svc> is shared by the service distribution (services/<svc>/src/k2rl/<svc>/) and
    this one (k2rl/<svc>/v1). An __init__.py in either would make it a regular package that
    hides the other half."""
    spec = importlib.util.find_spec(f"k2rl.{package}")
    assert spec is not None, f"k2rl.{package} is not importable: is k2rl-proto installed?"
    locations = [Path(p).resolve() for p in spec.submodule_search_locations or []]
    assert spec.origin in (None, "namespace") and SRC / "k2rl" / package in locations, (
        f"k2rl.{package} resolved to {spec.origin or locations}; it must be a PEP 420 namespace "
        f"package spanning {SRC / 'k2rl' / package}: delete any k2rl/{package}/__init__.py"
    )


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_service_has_exactly_the_expected_rpcs(package: str) -> None:
    service_name, rpcs = EXPECTED[package]
    pb2, _ = _modules(package)
    assert list(pb2.DESCRIPTOR.services_by_name) == [service_name]
    service = pb2.DESCRIPTOR.services_by_name[service_name]
    actual = {method.name: _shape(method) for method in service.methods}
    assert actual == rpcs


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_grpc_module_exposes_stub_servicer_and_registration(package: str) -> None:
    service_name, rpcs = EXPECTED[package]
    _, pb2_grpc = _modules(package)
    servicer = getattr(pb2_grpc, f"{service_name}Servicer")
    assert callable(getattr(pb2_grpc, f"add_{service_name}Servicer_to_server"))
    assert all(callable(getattr(servicer, rpc, None)) for rpc in rpcs)
    with grpc.insecure_channel("127.0.0.1:1") as channel:  # never connects: stubs are lazy
        stub = getattr(pb2_grpc, f"{service_name}Stub")(channel)
        assert all(callable(getattr(stub, rpc, None)) for rpc in rpcs)


@pytest.fixture(scope="module")
def channel_to_unimplemented_servers() -> grpc.Channel:
    """One in-process server hosting the generated base servicer of every service, whose
    methods answer UNIMPLEMENTED."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for package, (service_name, _) in EXPECTED.items():
        _, pb2_grpc = _modules(package)
        register = getattr(pb2_grpc, f"add_{service_name}Servicer_to_server")
        register(getattr(pb2_grpc, f"{service_name}Servicer")(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield channel
    finally:
        server.stop(grace=None)


@pytest.mark.parametrize(
    ("package", "rpc"),
    [(package, rpc) for package, (_, rpcs) in sorted(EXPECTED.items()) for rpc in rpcs],
)
def test_rpc_round_trips_over_grpc(
    channel_to_unimplemented_servers: grpc.Channel, package: str, rpc: str
) -> None:
    """Calls each RPC through the generated stub with its own request type. Reaching the
    servicer (UNIMPLEMENTED, not a serialization or routing error) shows the method path,
    streaming shape and message types of client and server agree."""
    service_name, rpcs = EXPECTED[package]
    pb2, pb2_grpc = _modules(package)
    stub = getattr(pb2_grpc, f"{service_name}Stub")(channel_to_unimplemented_servers)
    request = getattr(pb2, f"{rpc}Request")()
    call = getattr(stub, rpc)
    shape = rpcs[rpc]
    with pytest.raises(grpc.RpcError) as raised:
        if shape == UNARY:
            call(request, timeout=10)
        elif shape == SERVER_STREAM:
            list(call(request, timeout=10))
        elif shape == CLIENT_STREAM:
            call(iter([request]), timeout=10)
        else:
            list(call(iter([request]), timeout=10))
    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED, raised.value.details()
