"""Test doubles of inference, trainer, checkpoint engine and judge, served over real gRPC in-process.

They implement the contracts (protos/k2rl/*/v1) with trivial internals so the controller's
logic (partial rollout, resume, atomic recording, expected_step) is testable in seconds
without models. They are not the services: tests/test_e2e_*.py runs the real ones.

The inference double "answers" arithmetic prompts correctly; trajectories whose id hashes
to 0 mod 3 first emit ``long_padding`` spaces (a long tail that partial rollout pauses).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce_pb2
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc as ce_grpc
from k2rl.common.v1 import common_pb2
from k2rl.controller.environments.arithmetic import solve
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc
from k2rl.models.tokenizer import ByteTokenizer
from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc

TOKENIZER = ByteTokenizer()


@dataclass
class FleetState:
    """Weight version shared by the doubles (what the checkpoint engine would distribute)."""

    version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class InferenceDouble(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, fleet: FleetState, token_delay_s: float = 0.002, long_padding: int = 24) -> None:
        self.fleet = fleet
        self.token_delay_s = token_delay_s
        self.long_padding = long_padding
        self.aborted: set[str] = set()
        self.awake = True
        self.requests: list[inference_pb2.GenerateRequest] = []
        self.calls: list[str] = []

    def _plan(self, request: inference_pb2.GenerateRequest) -> list[int]:
        text = TOKENIZER.decode(list(request.prompt_token_ids.ids), skip_special_tokens=True)
        a, rest = text.rstrip("=").split("+", 1)
        answer = str(solve(int(a), "+", int(rest)))
        trajectory = request.request_id.split("@", 1)[0]
        long = int(hashlib.sha1(trajectory.encode()).hexdigest(), 16) % 3 == 0
        return TOKENIZER.encode(" " * (self.long_padding if long else 0) + answer) + [TOKENIZER.eos_token_id]

    def Generate(self, request: inference_pb2.GenerateRequest,
                 context: grpc.ServicerContext) -> Iterator[inference_pb2.GenerateResponse]:
        if not self.awake:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "asleep")
        self.requests.append(request)
        plan = self._plan(request)
        position = len(request.resume_output_token_ids)
        limit = request.sampling_params.max_tokens
        while True:
            time.sleep(self.token_delay_s)
            if request.request_id in self.aborted:
                yield inference_pb2.GenerateResponse(finish_reason=common_pb2.FINISH_REASON_ABORT,
                                                     weight_version=self.fleet.version)
                return
            token = plan[position]
            position += 1
            done = token == TOKENIZER.eos_token_id
            finish = common_pb2.FINISH_REASON_STOP if done else (
                common_pb2.FINISH_REASON_LENGTH if position >= limit else common_pb2.FINISH_REASON_UNSPECIFIED)
            yield inference_pb2.GenerateResponse(token_ids=[token], logprobs=[-0.5], finish_reason=finish,
                                                 weight_version=self.fleet.version)
            if finish != common_pb2.FINISH_REASON_UNSPECIFIED:
                return

    def Abort(self, request: inference_pb2.AbortRequest, context: grpc.ServicerContext) -> inference_pb2.AbortResponse:
        self.aborted.update(request.request_ids)
        return inference_pb2.AbortResponse()

    def Sleep(self, request: inference_pb2.SleepRequest, context: grpc.ServicerContext) -> inference_pb2.SleepResponse:
        self.calls.append("Sleep")
        self.awake = False
        return inference_pb2.SleepResponse(state=inference_pb2.SLEEP_STATE_LEVEL_1)

    def WakeUp(self, request: inference_pb2.WakeUpRequest, context: grpc.ServicerContext) -> inference_pb2.WakeUpResponse:
        self.calls.append("WakeUp")
        self.awake = True
        return inference_pb2.WakeUpResponse(state=inference_pb2.SLEEP_STATE_AWAKE)


class TrainerDouble(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, fleet: FleetState, step_delay_s: float = 0.0) -> None:
        self.fleet = fleet
        self.step = 0
        self.step_delay_s = step_delay_s
        self.trained_ids: list[str] = []
        self.version_lags: list[int] = []  # per trained trajectory: fleet version - its oldest token's version
        self.calls: list[str] = []

    def TrainStep(self, request_iterator: Iterator[trainer_pb2.TrainStepRequest],
                  context: grpc.ServicerContext) -> trainer_pb2.TrainStepResponse:
        messages = list(request_iterator)
        config = messages[0].config
        if config.HasField("expected_step") and config.expected_step != self.step:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"at step {self.step}, not {config.expected_step}")
        trajectories = [t for m in messages for t in m.trajectories]
        for t in trajectories:
            if not t.HasField("reward") or not t.output_logprobs:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{t.trajectory_id} unscored or without logprobs")
        time.sleep(self.step_delay_s)
        self.calls.append("TrainStep")
        self.trained_ids += [t.trajectory_id for t in trajectories]
        self.version_lags += [self.fleet.version - min(turn.weight_version for turn in t.turns) for t in trajectories]
        self.step += 1
        rewards = [t.reward for t in trajectories]
        return trainer_pb2.TrainStepResponse(metrics=trainer_pb2.TrainStepMetrics(
            step=self.step, loss_kind=trainer_pb2.LOSS_KIND_RL_K15,
            rl=trainer_pb2.RlStepStats(trajectories=len(trajectories), reward_mean=sum(rewards) / len(rewards))))

    def Onload(self, request: trainer_pb2.OnloadRequest, context: grpc.ServicerContext) -> trainer_pb2.OnloadResponse:
        self.calls.append("Onload")
        return trainer_pb2.OnloadResponse()

    def Offload(self, request: trainer_pb2.OffloadRequest, context: grpc.ServicerContext) -> trainer_pb2.OffloadResponse:
        self.calls.append("Offload")
        return trainer_pb2.OffloadResponse()

    def PublishWeights(self, request: trainer_pb2.PublishWeightsRequest,
                       context: grpc.ServicerContext) -> trainer_pb2.PublishWeightsResponse:
        self.calls.append("PublishWeights")
        with self.fleet.lock:
            self.fleet.version += 1
            version = self.fleet.version
        return trainer_pb2.PublishWeightsResponse(version=common_pb2.WeightVersion(version=version,
                                                                                   trainer_step=self.step))

    def GetState(self, request: trainer_pb2.GetStateRequest, context: grpc.ServicerContext) -> trainer_pb2.GetStateResponse:
        return trainer_pb2.GetStateResponse(step=self.step, model_preset="k2-nano")


class CheckpointEngineDouble(ce_grpc.CheckpointEngineServiceServicer):
    def __init__(self, fleet: FleetState) -> None:
        self.fleet = fleet

    def GetVersion(self, request: ce_pb2.GetVersionRequest, context: grpc.ServicerContext) -> ce_pb2.GetVersionResponse:
        return ce_pb2.GetVersionResponse(fleet_version=self.fleet.version)

    def WaitForVersion(self, request: ce_pb2.WaitForVersionRequest,
                       context: grpc.ServicerContext) -> Iterator[ce_pb2.WaitForVersionResponse]:
        yield ce_pb2.WaitForVersionResponse(version=self.fleet.version, phase=ce_pb2.VERSION_PHASE_COMPLETE,
                                            replicas_ready=1, replicas_total=1)


class JudgeDouble(judge_pb2_grpc.JudgeServiceServicer):
    """Records ExportCriticData calls; writes one "pair" per request whose rewards differ."""

    def __init__(self) -> None:
        self.exports: list[judge_pb2.ExportCriticDataRequest] = []

    def ExportCriticData(self, request: judge_pb2.ExportCriticDataRequest,
                         context: grpc.ServicerContext) -> judge_pb2.ExportCriticDataResponse:
        self.exports.append(request)
        differ = len({s.reward for s in request.samples}) > 1
        return judge_pb2.ExportCriticDataResponse(rows_written=int(differ), path="critic.jsonl")


@dataclass
class Doubles:
    fleet: FleetState
    inference: InferenceDouble
    trainer: TrainerDouble
    checkpoint_engine: CheckpointEngineDouble
    judge: JudgeDouble
    address: str
    server: grpc.Server

    @property
    def dependencies(self) -> dict[str, str]:
        return {"inference": self.address, "trainer": self.address, "checkpoint_engine": self.address,
                "judge": self.address}


def serve_doubles(token_delay_s: float = 0.002, step_delay_s: float = 0.0, long_padding: int = 24) -> Doubles:
    """All three doubles on one loopback port; call ``.server.stop(0)`` when done."""
    fleet = FleetState()
    inference, trainer = InferenceDouble(fleet, token_delay_s, long_padding), TrainerDouble(fleet, step_delay_s)
    engine, judge = CheckpointEngineDouble(fleet), JudgeDouble()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=64))
    judge_pb2_grpc.add_JudgeServiceServicer_to_server(judge, server)
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(inference, server)
    trainer_pb2_grpc.add_TrainerServiceServicer_to_server(trainer, server)
    ce_grpc.add_CheckpointEngineServiceServicer_to_server(engine, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return Doubles(fleet, inference, trainer, engine, judge, f"127.0.0.1:{port}", server)


def serve_inference_double(fleet: FleetState, token_delay_s: float = 0.002,
                           long_padding: int = 24) -> tuple[InferenceDouble, str, grpc.Server]:
    """One more inference replica double on its own port, sharing ``fleet``'s weight version."""
    inference = InferenceDouble(fleet, token_delay_s, long_padding)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(inference, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return inference, f"127.0.0.1:{port}", server
