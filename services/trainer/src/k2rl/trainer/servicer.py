"""gRPC glue of TrainerService: protobuf in, ``TrainerJob`` calls, protobuf out.

All logic lives in the job / engine; this module only translates and checks what the
contract says about message shape (which fields a loss kind allows, finished and scored
trajectories, turns tiling the output).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import grpc

from k2rl.common.v1 import common_pb2
from k2rl.core.errors import FailedPrecondition, InvalidArgument
from k2rl.trainer.data import LMSequence, RLSample
from k2rl.trainer.engine import RLParams
from k2rl.trainer.job import Activity, JobState, RankReport, TrainerJob
from k2rl.trainer.metrics import StepMetrics, TrainerObserver
from k2rl.trainer.offload import Component, Placement
from k2rl.trainer.publish import WeightPublisher, checksum_algorithm
from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from k2rl.weights import DEFAULT_ALIGNMENT

_COMPONENTS = {
    trainer_pb2.TRAINER_STATE_COMPONENT_PARAMETERS: Component.PARAMETERS,
    trainer_pb2.TRAINER_STATE_COMPONENT_OPTIMIZER_STATE: Component.OPTIMIZER_STATE,
    trainer_pb2.TRAINER_STATE_COMPONENT_GRADIENTS: Component.GRADIENTS,
}
_COMPONENT_PB = {v: k for k, v in _COMPONENTS.items()}
_PLACEMENT_PB = {
    Placement.DEVICE: trainer_pb2.MEMORY_PLACEMENT_DEVICE,
    Placement.HOST: trainer_pb2.MEMORY_PLACEMENT_HOST,
    Placement.NOT_ALLOCATED: trainer_pb2.MEMORY_PLACEMENT_NOT_ALLOCATED,
}
_ACTIVITY_PB = {
    Activity.IDLE: trainer_pb2.TRAINER_ACTIVITY_IDLE,
    Activity.TRAINING: trainer_pb2.TRAINER_ACTIVITY_TRAINING,
    Activity.OFFLOADING: trainer_pb2.TRAINER_ACTIVITY_OFFLOADING,
    Activity.ONLOADING: trainer_pb2.TRAINER_ACTIVITY_ONLOADING,
    Activity.SAVING: trainer_pb2.TRAINER_ACTIVITY_SAVING,
    Activity.LOADING: trainer_pb2.TRAINER_ACTIVITY_LOADING,
    Activity.PUBLISHING: trainer_pb2.TRAINER_ACTIVITY_PUBLISHING,
}
_LOSS_KIND_PB = {
    "pretrain": trainer_pb2.LOSS_KIND_PRETRAIN,
    "sft": trainer_pb2.LOSS_KIND_SFT,
    "rl_k15": trainer_pb2.LOSS_KIND_RL_K15,
}


class TrainerServicer(trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(self, job: TrainerJob, default_checkpoint_dir: Path, publisher: WeightPublisher | None = None,
                 publish_bucket_bytes: int = 64 * 2**20, observer: TrainerObserver | None = None) -> None:
        self.job = job
        self.observer = observer or TrainerObserver()
        self.default_checkpoint_dir = default_checkpoint_dir
        self.publisher = publisher
        self.publish_bucket_bytes = publish_bucket_bytes
        self._publish_lock = threading.Lock()

    def TrainStep(self, request_iterator: Iterator[trainer_pb2.TrainStepRequest],
                  context: grpc.ServicerContext) -> trainer_pb2.TrainStepResponse:
        config, trajectories, sequences, ptx = _collect_stream(request_iterator)
        expected = config.expected_step if config.HasField("expected_step") else None
        kind = config.loss_kind
        if kind in (trainer_pb2.LOSS_KIND_PRETRAIN, trainer_pb2.LOSS_KIND_SFT):
            if trajectories or ptx:
                raise InvalidArgument("PRETRAIN / SFT steps take `sequences` only", field="trajectories")
            sft = kind == trainer_pb2.LOSS_KIND_SFT
            metrics = self.job.train_lm([_sequence(s, i, "sequences", sft=sft) for i, s in enumerate(sequences)],
                                        loss_kind="sft" if sft else "pretrain", expected_step=expected)
        elif kind == trainer_pb2.LOSS_KIND_RL_K15:
            if sequences:
                raise InvalidArgument("RL_K15 steps take `trajectories` (and `ptx_sequences`)", field="sequences")
            rl = config.rl
            if ptx and rl.ptx_weight == 0:
                raise InvalidArgument("ptx_sequences given but rl.ptx_weight is 0", field="ptx_sequences")
            params = RLParams(
                tau=rl.tau,
                ptx_weight=rl.ptx_weight,
                truncation_penalty=rl.budget_penalty.truncation_penalty,
                soft_window_tokens=rl.budget_penalty.soft_window_tokens,
                recompute_old_logprobs=rl.old_logprob_source != trainer_pb2.OLD_LOGPROB_SOURCE_ROLLOUT,
            )
            samples = [_rl_sample(t, i) for i, t in enumerate(trajectories)]
            metrics = self.job.train_rl(samples, params,
                                        [_sequence(s, i, "ptx_sequences", sft=False) for i, s in enumerate(ptx)],
                                        expected_step=expected)
        else:
            raise InvalidArgument("loss_kind must be PRETRAIN, SFT or RL_K15", field="config.loss_kind")
        self.observer.step_finished(metrics)
        return trainer_pb2.TrainStepResponse(metrics=_metrics_pb(metrics, config.iteration))

    def Offload(self, request: trainer_pb2.OffloadRequest, context: grpc.ServicerContext) -> trainer_pb2.OffloadResponse:
        result = self.job.offload(_components(request.components))
        self.observer.memory_moved("offload", result.duration_s, result.bytes_moved)
        return trainer_pb2.OffloadResponse(bytes_moved=result.bytes_moved, duration_ms=result.duration_s * 1e3,
                                           ranks=[_rank_pb(r) for r in result.ranks])

    def Onload(self, request: trainer_pb2.OnloadRequest, context: grpc.ServicerContext) -> trainer_pb2.OnloadResponse:
        result = self.job.onload(_components(request.components))
        self.observer.memory_moved("onload", result.duration_s, result.bytes_moved)
        return trainer_pb2.OnloadResponse(bytes_moved=result.bytes_moved, duration_ms=result.duration_s * 1e3,
                                          ranks=[_rank_pb(r) for r in result.ranks])

    def PublishWeights(self, request: trainer_pb2.PublishWeightsRequest,
                       context: grpc.ServicerContext) -> trainer_pb2.PublishWeightsResponse:
        if self.publisher is None:
            raise FailedPrecondition("no checkpoint engine configured: set dependencies.checkpoint_engine "
                                     "(K2RL_DEPENDENCIES) to the coordinator's host:port")
        bucket_bytes = request.bucket_bytes or self.publish_bucket_bytes
        if bucket_bytes % DEFAULT_ALIGNMENT:
            raise InvalidArgument(f"bucket_bytes must be a multiple of {DEFAULT_ALIGNMENT}", field="bucket_bytes")
        algorithm = checksum_algorithm(request.checksum_algorithm, self.job.ctx.device.type)
        started = time.perf_counter()
        with self._publish_lock:  # one version at a time through the staging buffers
            self.publisher.begin(self.job.rank_identities())
            step, staged = self.job.stage_weights(bucket_bytes, algorithm)
            result = self.publisher.publish(staged, step, started)
        self.observer.weights_published(result.duration_s)
        return trainer_pb2.PublishWeightsResponse(version=result.version, bucket_count=result.bucket_count,
                                                  duration_ms=result.duration_s * 1e3)

    def SaveCheckpoint(self, request: trainer_pb2.SaveCheckpointRequest,
                       context: grpc.ServicerContext) -> trainer_pb2.SaveCheckpointResponse:
        if request.format == common_pb2.CHECKPOINT_FORMAT_UNSPECIFIED:
            raise InvalidArgument("choose HF_SAFETENSORS (weights) or TORCH_DCP (resumable)", field="format")
        if request.format == common_pb2.CHECKPOINT_FORMAT_HF_SAFETENSORS and request.include_optimizer_state:
            raise InvalidArgument("HF_SAFETENSORS holds weights only; use TORCH_DCP for optimizer state",
                                  field="include_optimizer_state")
        directory = Path(request.directory) if request.directory else self.default_checkpoint_dir
        result = self.job.save(directory, include_optimizer=request.include_optimizer_state)
        return trainer_pb2.SaveCheckpointResponse(path=str(result.path), step=result.step,
                                                  bytes_written=result.bytes_written,
                                                  duration_ms=result.duration_s * 1e3)

    def LoadCheckpoint(self, request: trainer_pb2.LoadCheckpointRequest,
                       context: grpc.ServicerContext) -> trainer_pb2.LoadCheckpointResponse:
        if not request.path:
            raise InvalidArgument("path is required", field="path")
        if request.load_optimizer_state and request.format == common_pb2.CHECKPOINT_FORMAT_HF_SAFETENSORS:
            raise InvalidArgument("HF_SAFETENSORS holds no optimizer state", field="load_optimizer_state")
        result = self.job.load(Path(request.path), step=request.step if request.HasField("step") else None,
                               load_optimizer=request.load_optimizer_state)
        return trainer_pb2.LoadCheckpointResponse(path=str(result.path), step=result.step,
                                                  bytes_read=result.bytes_read, duration_ms=result.duration_s * 1e3)

    def GetState(self, request: trainer_pb2.GetStateRequest, context: grpc.ServicerContext) -> trainer_pb2.GetStateResponse:
        response = _state_pb(self.job.state())
        if self.publisher is not None and self.publisher.published is not None:
            response.published_version.CopyFrom(self.publisher.published)
        return response


# -- requests -> domain ----------------------------------------------------------------------


def _collect_stream(
    requests: Iterator[trainer_pb2.TrainStepRequest],
) -> tuple[trainer_pb2.TrainStepConfig, list, list, list]:
    config = None
    trajectories: list = []
    sequences: list = []
    ptx: list = []
    for i, message in enumerate(requests):
        if message.HasField("config"):
            if i > 0:
                raise InvalidArgument("config is only allowed in the first message", field=f"messages[{i}].config")
            config = message.config
        elif i == 0:
            raise InvalidArgument("the first TrainStep message must carry config", field="config")
        trajectories.extend(message.trajectories)
        sequences.extend(message.sequences)
        ptx.extend(message.ptx_sequences)
    if config is None:
        raise InvalidArgument("empty TrainStep stream: send a config and a batch", field="config")
    return config, trajectories, sequences, ptx


def _sequence(seq: trainer_pb2.TokenSequence, index: int, field: str, *, sft: bool) -> LMSequence:
    name = f"{field}[{index}]"
    if sft and not seq.loss_mask:
        raise InvalidArgument("SFT sequences need a loss_mask", field=name)
    if not sft and seq.loss_mask:
        raise InvalidArgument("loss_mask must be empty here (every token is a target)", field=name)
    return LMSequence(tuple(seq.token_ids), tuple(seq.loss_mask) if sft else None, seq.sequence_id)


def _rl_sample(t: common_pb2.Trajectory, index: int) -> RLSample:
    name = f"trajectories[{index}] ({t.trajectory_id})"
    if t.finish_reason not in (common_pb2.FINISH_REASON_STOP, common_pb2.FINISH_REASON_LENGTH):
        raise InvalidArgument("trajectory is not finished (finish_reason must be STOP or LENGTH)", field=name)
    if not t.HasField("reward"):
        raise InvalidArgument("trajectory has no reward; score it before training", field=name)
    if not t.prompt_id:
        raise InvalidArgument("prompt_id is required (samples are grouped by it)", field=name)
    n = len(t.output_token_ids)
    mask = [False] * n
    position = 0
    for turn in t.turns:
        if turn.output_token_start != position or not position < turn.output_token_end <= n:
            raise InvalidArgument(f"turns must tile output_token_ids [0, {n}) in order without gaps", field=name)
        if turn.role == common_pb2.TURN_ROLE_UNSPECIFIED:
            raise InvalidArgument("turn role is unspecified", field=name)
        if turn.role == common_pb2.TURN_ROLE_MODEL:
            mask[turn.output_token_start:turn.output_token_end] = [True] * (turn.output_token_end - position)
        position = turn.output_token_end
    if position != n:
        raise InvalidArgument(f"turns cover [0, {position}) of {n} output tokens", field=name)
    if len(t.output_logprobs) != n:
        raise InvalidArgument(f"{len(t.output_logprobs)} output_logprobs for {n} output tokens", field=name)
    return RLSample(
        sample_id=t.trajectory_id,
        prompt_id=t.prompt_id,
        prompt_token_ids=tuple(t.prompt_token_ids),
        output_token_ids=tuple(t.output_token_ids),
        output_logprobs=tuple(t.output_logprobs),
        model_token_mask=tuple(mask),
        reward=t.reward,
        truncated=t.finish_reason == common_pb2.FINISH_REASON_LENGTH and t.token_budget > 0,
        token_budget=t.token_budget,
    )


def _components(values: Iterable[int]) -> list[Component]:
    chosen = []
    for value in values:
        if value not in _COMPONENTS:
            raise InvalidArgument(f"unknown or unspecified component {value}", field="components")
        chosen.append(_COMPONENTS[value])
    return chosen or list(Component)


# -- domain -> responses ---------------------------------------------------------------------


def _metrics_pb(m: StepMetrics, iteration: int) -> trainer_pb2.TrainStepMetrics:
    out = trainer_pb2.TrainStepMetrics(
        step=m.step, loss_kind=_LOSS_KIND_PB[m.loss_kind], total_loss=m.total_loss, policy_loss=m.policy_loss,
        ptx_loss=m.ptx_loss, lm_loss=m.lm_loss, grad_norm=m.grad_norm, learning_rate=m.learning_rate,
        trained_tokens=m.trained_tokens, processed_tokens=m.processed_tokens,
        tokens_per_second=m.tokens_per_second, mfu=m.mfu, step_time_ms=m.step_time_s * 1e3,
        peak_device_memory_bytes=m.peak_device_memory_bytes, extra={**m.extra, "iteration": float(iteration)},
    )
    if m.qk_clip is not None:
        q = m.qk_clip
        out.qk_clip.CopyFrom(trainer_pb2.QkClipStats(
            tau=q.tau or 0.0, clipped_heads=q.num_clipped, total_heads=q.num_heads, max_logit=q.max_logit or 0.0,
            max_logit_per_layer=[x if x is not None else 0.0 for x in q.per_layer_max_logit],
        ))
    if m.rl is not None:
        r = m.rl
        out.rl.CopyFrom(trainer_pb2.RlStepStats(
            trajectories=r.trajectories, groups=r.groups, reward_mean=r.reward_mean, reward_std=r.reward_std,
            budget_penalty_mean=r.budget_penalty_mean, truncated_fraction=r.truncated_fraction,
            mean_response_tokens=r.mean_response_tokens, log_ratio_mean=r.log_ratio_mean,
            stale_token_fraction=r.stale_token_fraction,
        ))
    return out


def _rank_pb(r: RankReport) -> trainer_pb2.RankState:
    return trainer_pb2.RankState(rank=r.rank, node=r.node, device=r.device,
                                 device_memory_allocated_bytes=r.allocated_bytes,
                                 device_memory_reserved_bytes=r.reserved_bytes,
                                 device_memory_total_bytes=r.total_bytes, host_pinned_bytes=r.host_pinned_bytes)


def _state_pb(s: JobState) -> trainer_pb2.GetStateResponse:
    return trainer_pb2.GetStateResponse(
        step=s.step, model_preset=s.model, parameter_count=s.parameter_count, activity=_ACTIVITY_PB[s.activity],
        world_size=s.world_size, ranks=[_rank_pb(r) for r in s.ranks],
        placements=[trainer_pb2.ComponentPlacement(component=_COMPONENT_PB[c.component],
                                                   placement=_PLACEMENT_PB[c.placement], bytes=c.bytes)
                    for c in s.components],
    )

