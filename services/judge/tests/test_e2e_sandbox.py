"""Code reward end to end: the judge and a real sandbox service as separate processes
(``LocalCluster``), the judge reaching the sandbox through ``K2RL_DEPENDENCIES``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from k2rl.core.client import close_stub, create_stub
from k2rl.core.launcher import LocalCluster
from k2rl.judge.v1 import judge_pb2 as pb
from k2rl.judge.v1 import judge_pb2_grpc
from k2rl.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc

pytestmark = pytest.mark.slow

TESTS = [sandbox_pb2.TestCase(name=f"t{n}", stdin=f"{n}\n".encode(), expected_stdout=f"{2 * n}\n".encode())
         for n in (1, 2, 50)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    log_dir: Path = tmp_path_factory.mktemp("logs")
    cluster = LocalCluster(("sandbox", "judge"), free_ports=True, log_dir=log_dir)
    cluster.start()
    try:
        cluster.wait_until_serving(60)
        probe = create_stub(sandbox_pb2_grpc.SandboxServiceStub, cluster.settings["sandbox"].address,
                            cluster.client_options())
        try:
            probe.Execute(sandbox_pb2.ExecuteRequest(language=sandbox_pb2.LANGUAGE_PYTHON, code="pass"), timeout=30)
        except grpc.RpcError as error:
            if error.code() is grpc.StatusCode.UNIMPLEMENTED:
                pytest.skip("the sandbox service does not implement Execute yet")
            raise
        finally:
            close_stub(probe)
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.parametrize(("code", "partial_credit", "reward"), [
    ("print(int(input()) * 2)", False, 1.0),
    ("n = int(input())\nprint(n * 2 if n < 10 else 0)", True, 2 / 3),
    ("n = int(input())\nprint(n * 2 if n < 10 else 0)", False, 0.0),
    ("while True:\n    pass", False, 0.0),  # killed by the sandbox's wall-time limit
    ("import os\nos._exit(0)", True, 0.0),
])
def test_code_reward_through_a_real_sandbox(cluster: LocalCluster, code: str, partial_credit: bool,
                                            reward: float) -> None:
    task = pb.TaskSpec(kind=pb.TASK_KIND_CODE, code=pb.CodeReference(
        language=sandbox_pb2.LANGUAGE_PYTHON, tests=TESTS, partial_credit=partial_credit,
        limits=sandbox_pb2.ResourceLimits(wall_time_ms=2000)))
    stub = create_stub(judge_pb2_grpc.JudgeServiceStub, cluster.settings["judge"].address, cluster.client_options())
    try:
        reply = stub.Score(pb.ScoreRequest(task=task, response=f"```python\n{code}\n```"), timeout=60)
    finally:
        close_stub(stub)
    assert not reply.HasField("error"), reply.error
    assert reply.reward == pytest.approx(reward)
    assert reply.passed is (reward == 1.0)
    assert len(reply.checks) == len(TESTS)
