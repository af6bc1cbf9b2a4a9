"""Several inference replicas: the controller spreads rollouts over them, drives Sleep/WakeUp
on each, and fails over from one that stops answering. Replicas are test doubles on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from doubles import Doubles, serve_doubles, serve_inference_double
from test_loop import demo_config

from k2rl.controller.environments import EnvironmentServices, build_environment
from k2rl.controller.rollout import RolloutLimits, RolloutManager
from k2rl.controller.run_store import Cursor, RunStore
from k2rl.controller.runs import RunManager
from k2rl.controller.scheduler.batching import draw_groups
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.service import ControllerSettings
from k2rl.controller.trajectories import SampleStatus
from k2rl.controller.v1 import controller_pb2 as pb
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.net import free_loopback_port
from k2rl.core.store import SqliteStore
from k2rl.inference.v1 import inference_pb2_grpc
from k2rl.models.tokenizer import load_tokenizer


@pytest.fixture
def doubles() -> Doubles:
    served = serve_doubles(token_delay_s=0.005, long_padding=10)
    yield served
    served.server.stop(0)


def test_replica_list_replaces_the_inference_dependencies() -> None:
    settings = ControllerSettings(service="controller", dependencies={"inference": "a:1", "trainer": "t:1"},
                                  inference_replicas=["r:1", "r:2", "r:3"])
    assert settings.dependencies == {"trainer": "t:1", "inference": "r:1", "inference-1": "r:2", "inference-2": "r:3"}
    with pytest.raises(ValueError, match="distinct"):
        ControllerSettings(service="controller", inference_replicas=["r:1", "r:1"])


def test_a_run_spreads_rollouts_over_two_replicas_and_sleeps_and_wakes_both(doubles: Doubles,
                                                                             tmp_path: Path) -> None:
    second, address, server = serve_inference_double(doubles.fleet, token_delay_s=0.005, long_padding=10)
    try:
        settings = ControllerSettings(service="controller", dependencies=doubles.dependencies,
                                      inference_replicas=[doubles.address, address])
        dependencies = {k: v for k, v in settings.dependencies.items() if k != "controller"}
        runs = RunManager(RunStore(SqliteStore(tmp_path / "state.db")), lambda: ServiceClients.connect(
            dependencies, lambda stub, target: create_stub(stub, target, ClientOptions())), load_tokenizer)
        runs.start(demo_config(iterations=2), "two", resume=False)
        assert runs.wait("two", timeout_s=60).state == pb.RUN_STATE_SUCCEEDED
        first = doubles.inference
        assert first.requests and second.requests
        assert {r.request_id for r in first.requests}.isdisjoint(r.request_id for r in second.requests)
        for replica in (first, second):
            assert replica.calls.count("Sleep") == 2 and replica.calls.count("WakeUp") >= 2
    finally:
        server.stop(0)


def test_rollouts_fail_over_from_a_replica_that_is_unavailable(doubles: Doubles) -> None:
    tokenizer = load_tokenizer("k2-nano")
    config = demo_config()
    environments = {"arithmetic": build_environment("arithmetic", {"max_operand": "50"}, "", 7,
                                                    EnvironmentServices())}
    groups = draw_groups(config, environments, Cursor(), 4, 0, tokenizer, 512)
    live = create_stub(inference_pb2_grpc.InferenceServiceStub, doubles.address, ClientOptions())
    dead = create_stub(inference_pb2_grpc.InferenceServiceStub, f"127.0.0.1:{free_loopback_port()}",
                       ClientOptions())
    try:
        manager = RolloutManager([("dead", dead), ("live", live)], tokenizer, environments,
                                 RolloutLimits(max_concurrent=8, generate_timeout_s=30), persist=lambda group: None)
        outcome = manager.run(groups, lambda group: config.sampling, iteration=0)
    finally:
        close_stub(live)
        close_stub(dead)
    assert outcome.errors == []
    assert manager._replicas[0].down_until > 0, "the dead replica was never tried"  # first pick on a tie
    assert all(s.status is SampleStatus.FINISHED and s.reward == 1.0 for g in groups for s in g.samples)
    assert len(doubles.inference.requests) == sum(len(g.samples) for g in groups)
