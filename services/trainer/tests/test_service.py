"""TrainerService over gRPC: every RPC, and clear errors for bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from k2rl.common.v1 import common_pb2
from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.testing import assert_serves_contract, free_loopback_port, serve_in_process
from k2rl.trainer.config import TrainingConfig
from k2rl.trainer.service import SERVICE
from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc

PARAMETERS = trainer_pb2.TRAINER_STATE_COMPONENT_PARAMETERS


@pytest.fixture(scope="module")
def stub(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[trainer_pb2_grpc.TrainerServiceStub]:
    checkpoints = tmp_path_factory.mktemp("checkpoints")
    nobody = f"127.0.0.1:{free_loopback_port()}"  # no coordinator listens here
    with serve_in_process(SERVICE, model=str(tiny_checkpoint), checkpoint_dir=checkpoints,
                          dependencies={"checkpoint_engine": nobody},
                          training=TrainingConfig(lr=1e-2, micro_batch_tokens=64)) as runtime:
        assert_serves_contract(runtime, "k2rl.trainer.v1.TrainerService")
        client = create_stub(trainer_pb2_grpc.TrainerServiceStub, runtime.settings.address, ClientOptions())
        yield client
        close_stub(client)


def _seq(ids: list[int], mask: list[bool] | None = None) -> trainer_pb2.TokenSequence:
    return trainer_pb2.TokenSequence(token_ids=ids, loss_mask=mask or [], sequence_id="x")


def _trajectory(i: int, answer: int, reward: float | None = 1.0, **overrides) -> common_pb2.Trajectory:
    fields = dict(
        trajectory_id=f"t{i}", prompt_id="p", sample_index=i, prompt_token_ids=[81, 58], output_token_ids=[answer, 10],
        output_logprobs=[-1.0, 0.0], finish_reason=common_pb2.FINISH_REASON_STOP,
        turns=[common_pb2.Turn(role=common_pb2.TURN_ROLE_MODEL, output_token_start=0, output_token_end=1),
               common_pb2.Turn(role=common_pb2.TURN_ROLE_TOOL, output_token_start=1, output_token_end=2)],
    )
    fields.update(overrides)
    t = common_pb2.Trajectory(**fields)
    if reward is not None:
        t.reward = reward
    return t


def _step(stub, *messages: trainer_pb2.TrainStepRequest) -> trainer_pb2.TrainStepResponse:
    return stub.TrainStep(iter(messages), timeout=60)


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as error:
        call()
    return error.value.code()


def test_pretrain_sft_and_rl_steps(stub) -> None:
    start = stub.GetState(trainer_pb2.GetStateRequest(), timeout=10).step
    config = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN, expected_step=start)
    response = _step(stub, trainer_pb2.TrainStepRequest(config=config, sequences=[_seq(list(range(30, 50)))]),
                     trainer_pb2.TrainStepRequest(sequences=[_seq(list(range(60, 70)))]))  # data split over messages
    m = response.metrics
    assert m.step == start + 1 and m.loss_kind == trainer_pb2.LOSS_KIND_PRETRAIN
    assert m.lm_loss > 0 and m.trained_tokens == 19 + 9 and m.processed_tokens == 30
    assert m.qk_clip.total_heads == 8 and m.qk_clip.max_logit > 0 and m.learning_rate == pytest.approx(1e-2)

    sft = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_SFT)
    m = _step(stub, trainer_pb2.TrainStepRequest(config=sft, sequences=[_seq([1, 2, 3, 4], [False, False, True, True])]))
    assert m.metrics.trained_tokens == 2

    rl = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_RL_K15, rl=trainer_pb2.RlLossParams(
        tau=0.5, ptx_weight=0.1, budget_penalty=trainer_pb2.BudgetPenalty(truncation_penalty=0.5)))
    truncated = _trajectory(1, 66, 0.0, finish_reason=common_pb2.FINISH_REASON_LENGTH, token_budget=2)
    m = _step(stub, trainer_pb2.TrainStepRequest(config=rl, trajectories=[_trajectory(0, 65), truncated],
                                                 ptx_sequences=[_seq(list(range(40, 50)))])).metrics
    assert m.loss_kind == trainer_pb2.LOSS_KIND_RL_K15 and m.rl.trajectories == 2 and m.rl.groups == 1
    assert m.rl.truncated_fraction == 0.5 and m.rl.budget_penalty_mean == pytest.approx(0.25)
    assert m.total_loss == pytest.approx(m.policy_loss + 0.1 * m.ptx_loss, rel=1e-6)
    assert m.rl.mean_response_tokens == 1  # the TOOL token is not the policy's

    stale = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN, expected_step=0)
    assert _code(lambda: _step(stub, trainer_pb2.TrainStepRequest(
        config=stale, sequences=[_seq([1, 2, 3])]))) is grpc.StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "messages",
    [
        [],
        [trainer_pb2.TrainStepRequest(sequences=[_seq([1, 2])])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(), sequences=[_seq([1, 2])])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN))],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN),
                                      sequences=[_seq([1, 100000])])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_SFT),
                                      sequences=[_seq([1, 2, 3])])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(
            loss_kind=trainer_pb2.LOSS_KIND_RL_K15, rl=trainer_pb2.RlLossParams(tau=1.0)),
            trajectories=[_trajectory(0, 65, reward=None)])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(
            loss_kind=trainer_pb2.LOSS_KIND_RL_K15, rl=trainer_pb2.RlLossParams(tau=1.0)),
            trajectories=[_trajectory(0, 65, finish_reason=common_pb2.FINISH_REASON_ABORT)])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(
            loss_kind=trainer_pb2.LOSS_KIND_RL_K15, rl=trainer_pb2.RlLossParams(tau=1.0)),
            trajectories=[_trajectory(0, 65, turns=[])])],
        [trainer_pb2.TrainStepRequest(config=trainer_pb2.TrainStepConfig(
            loss_kind=trainer_pb2.LOSS_KIND_RL_K15, rl=trainer_pb2.RlLossParams(tau=0.0)),
            trajectories=[_trajectory(0, 65)])],
    ],
    ids=["empty", "no-config", "no-loss-kind", "no-data", "bad-token", "sft-no-mask", "unscored", "unfinished",
         "no-turns", "zero-tau"],
)
def test_bad_batches_are_invalid_argument_and_the_service_keeps_serving(stub, messages) -> None:
    assert _code(lambda: stub.TrainStep(iter(messages), timeout=30)) is grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetState(trainer_pb2.GetStateRequest(), timeout=10).activity == trainer_pb2.TRAINER_ACTIVITY_IDLE


def test_offload_onload_and_state(stub) -> None:
    off = stub.Offload(trainer_pb2.OffloadRequest(), timeout=30)
    assert off.bytes_moved > 0 and len(off.ranks) == 1 and off.ranks[0].device == "cpu"
    state = stub.GetState(trainer_pb2.GetStateRequest(), timeout=10)
    placements = {p.component: p.placement for p in state.placements}
    assert placements[PARAMETERS] == trainer_pb2.MEMORY_PLACEMENT_HOST
    config = trainer_pb2.TrainStepConfig(loss_kind=trainer_pb2.LOSS_KIND_PRETRAIN)
    assert _code(lambda: _step(stub, trainer_pb2.TrainStepRequest(config=config, sequences=[_seq([1, 2, 3])]))) \
        is grpc.StatusCode.FAILED_PRECONDITION
    on = stub.Onload(trainer_pb2.OnloadRequest(components=[PARAMETERS]), timeout=30)
    assert 0 < on.bytes_moved < off.bytes_moved  # parameters only
    stub.Onload(trainer_pb2.OnloadRequest(), timeout=30)
    state = stub.GetState(trainer_pb2.GetStateRequest(), timeout=10)
    assert {p.placement for p in state.placements} <= {trainer_pb2.MEMORY_PLACEMENT_DEVICE,
                                                       trainer_pb2.MEMORY_PLACEMENT_NOT_ALLOCATED}
    assert state.world_size == 1 and state.parameter_count > 1_000_000 and state.model_preset.endswith("tiny-k20")
    assert _code(lambda: stub.Offload(trainer_pb2.OffloadRequest(components=[0]), timeout=10)) \
        is grpc.StatusCode.INVALID_ARGUMENT


def test_save_and_load_checkpoint(stub, tmp_path: Path) -> None:
    saved = stub.SaveCheckpoint(trainer_pb2.SaveCheckpointRequest(
        directory=str(tmp_path), format=common_pb2.CHECKPOINT_FORMAT_TORCH_DCP, include_optimizer_state=True),
        timeout=60)
    assert Path(saved.path) == tmp_path / f"step_{saved.step}" and saved.bytes_written > 0
    loaded = stub.LoadCheckpoint(trainer_pb2.LoadCheckpointRequest(path=str(tmp_path), load_optimizer_state=True),
                                 timeout=60)
    assert loaded.step == saved.step and loaded.bytes_read > 0
    bad = [
        lambda: stub.SaveCheckpoint(trainer_pb2.SaveCheckpointRequest(directory=str(tmp_path)), timeout=10),
        lambda: stub.SaveCheckpoint(trainer_pb2.SaveCheckpointRequest(
            directory=str(tmp_path), format=common_pb2.CHECKPOINT_FORMAT_HF_SAFETENSORS,
            include_optimizer_state=True), timeout=10),
        lambda: stub.LoadCheckpoint(trainer_pb2.LoadCheckpointRequest(), timeout=10),
    ]
    assert [_code(call) for call in bad] == [grpc.StatusCode.INVALID_ARGUMENT] * 3
    assert _code(lambda: stub.LoadCheckpoint(trainer_pb2.LoadCheckpointRequest(path=str(tmp_path / "none")),
                                             timeout=10)) is grpc.StatusCode.NOT_FOUND


def test_publish_weights_without_a_reachable_checkpoint_engine_is_unavailable_and_names_it(stub) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.PublishWeights(trainer_pb2.PublishWeightsRequest(), timeout=30)
    assert error.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "checkpoint engine at 127.0.0.1:" in error.value.details()
    assert _code(lambda: stub.PublishWeights(trainer_pb2.PublishWeightsRequest(bucket_bytes=1000), timeout=10)) \
        is grpc.StatusCode.INVALID_ARGUMENT
    assert stub.GetState(trainer_pb2.GetStateRequest(), timeout=10).published_version.version == 0
