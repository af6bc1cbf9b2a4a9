"""The judge service starts on the shared runtime and serves its contract."""

import grpc
import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import assert_serves_contract, serve_in_process
from k2rl.judge.service import SERVICE
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc


def test_serves_health_and_reflection_for_its_contract() -> None:
    with serve_in_process(SERVICE, auth_token="t") as runtime:
        assert_serves_contract(runtime, "k2rl.judge.v1.JudgeService")


def test_rpcs_without_logic_yet_answer_unimplemented_not_a_crash() -> None:
    with serve_in_process(SERVICE) as runtime:
        stub = create_stub(judge_pb2_grpc.JudgeServiceStub, runtime.settings.address, ClientOptions())
        try:
            with pytest.raises(grpc.RpcError) as error:
                stub.Score(judge_pb2.ScoreRequest(), timeout=5)
        finally:
            close_stub(stub)
        assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
