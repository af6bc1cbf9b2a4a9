"""The inference service starts on the shared runtime and serves its contract."""

import grpc
import pytest

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import assert_serves_contract, serve_in_process
from k2rl.inference.service import SERVICE
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc


def test_serves_health_and_reflection_for_its_contract() -> None:
    with serve_in_process(SERVICE, auth_token="t") as runtime:
        assert_serves_contract(runtime, "k2rl.inference.v1.InferenceService")


def test_rpcs_without_logic_yet_answer_unimplemented_not_a_crash() -> None:
    with serve_in_process(SERVICE) as runtime:
        stub = create_stub(inference_pb2_grpc.InferenceServiceStub, runtime.settings.address, ClientOptions())
        try:
            with pytest.raises(grpc.RpcError) as error:
                stub.GetModelInfo(inference_pb2.GetModelInfoRequest(), timeout=5)
        finally:
            close_stub(stub)
        assert error.value.code() is grpc.StatusCode.UNIMPLEMENTED
