"""gRPC glue of the inference service: proto <-> engine types, nothing else."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc

from k2rl.common.v1 import common_pb2
from k2rl.core.errors import InvalidArgument
from k2rl.inference.engine import Engine, GenerationRequest
from k2rl.inference.runner import EngineRunner
from k2rl.inference.sampling import SamplingOptions
from k2rl.inference.sequence import FinishReason, PartialOutput, SequenceUpdate
from k2rl.inference.sleep import MemoryPool, SleepState
from k2rl.inference.update import WeightUpdateSession
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc

FINISH_REASONS = {
    None: common_pb2.FINISH_REASON_UNSPECIFIED,
    FinishReason.STOP: common_pb2.FINISH_REASON_STOP,
    FinishReason.LENGTH: common_pb2.FINISH_REASON_LENGTH,
    FinishReason.ABORT: common_pb2.FINISH_REASON_ABORT,
}
SLEEP_STATES = {
    SleepState.AWAKE: inference_pb2.SLEEP_STATE_AWAKE,
    SleepState.LEVEL_1: inference_pb2.SLEEP_STATE_LEVEL_1,
    SleepState.LEVEL_2: inference_pb2.SLEEP_STATE_LEVEL_2,
    SleepState.WEIGHTS_ONLY: inference_pb2.SLEEP_STATE_WEIGHTS_ONLY,
}
MEMORY_POOLS = {
    inference_pb2.MEMORY_POOL_WEIGHTS: MemoryPool.WEIGHTS,
    inference_pb2.MEMORY_POOL_KV_CACHE: MemoryPool.KV_CACHE,
}
BACKENDS = {"native": inference_pb2.INFERENCE_BACKEND_NATIVE, "vllm": inference_pb2.INFERENCE_BACKEND_VLLM}
TENSOR_DTYPES = {
    "torch.float32": common_pb2.TENSOR_DTYPE_FLOAT32,
    "torch.float16": common_pb2.TENSOR_DTYPE_FLOAT16,
    "torch.bfloat16": common_pb2.TENSOR_DTYPE_BFLOAT16,
}


@dataclass(frozen=True)
class ReplicaDescription:
    """Static facts about the replica that GetModelInfo reports."""

    architecture: str
    model_preset: str
    config_json: str
    tokenizer_name: str
    chat_template: str
    devices: tuple[str, ...]


def sampling_options(params: common_pb2.SamplingParams) -> SamplingOptions:
    return SamplingOptions(
        temperature=params.temperature if params.HasField("temperature") else 1.0,
        top_p=params.top_p if params.HasField("top_p") else 1.0,
        top_k=params.top_k,
        n=params.n or 1,
        seed=params.seed if params.HasField("seed") else None,
        max_tokens=params.max_tokens,
        min_tokens=params.min_tokens,
        stop_strings=tuple(params.stop_strings),
        stop_token_ids=tuple(params.stop_token_ids),
        ignore_eos=params.ignore_eos,
    )


def _usage(prompt: int, completion: int, cached: int) -> common_pb2.Usage:
    return common_pb2.Usage(prompt_tokens=prompt, completion_tokens=completion, cached_prompt_tokens=cached)


def _chunk(update: SequenceUpdate) -> inference_pb2.GenerateResponse:
    response = inference_pb2.GenerateResponse(
        sample_index=update.sample_index,
        token_ids=update.token_ids,
        logprobs=update.logprobs,
        text=update.text,
        finish_reason=FINISH_REASONS[update.finish_reason],
        weight_version=update.weight_version,
    )
    if update.finish_reason is not None:
        response.usage.CopyFrom(_usage(update.prompt_tokens, update.completion_tokens, update.cached_prompt_tokens))
        response.matched_stop_string = update.matched_stop_string
        if update.matched_stop_token_id is not None:
            response.matched_stop_token_id = update.matched_stop_token_id
    return response


def _partial(partial: PartialOutput) -> inference_pb2.PartialGeneration:
    return inference_pb2.PartialGeneration(
        request_id=partial.request_id,
        sample_index=partial.sample_index,
        output_token_ids=partial.output_token_ids,
        output_logprobs=partial.output_logprobs,
        turns=[
            common_pb2.Turn(
                role=common_pb2.TURN_ROLE_MODEL,
                output_token_start=span.start,
                output_token_end=span.end,
                weight_version=span.version,
            )
            for span in partial.version_spans
        ],
        usage=_usage(partial.prompt_tokens, partial.completion_tokens, partial.cached_prompt_tokens),
    )


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, runner: EngineRunner, description: ReplicaDescription) -> None:
        self._runner = runner
        self._description = description

    def Generate(
        self, request: inference_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.GenerateResponse]:
        prompt_kind = request.WhichOneof("prompt")
        if prompt_kind is None:
            raise InvalidArgument("set prompt_token_ids or prompt_text", field="prompt")
        if prompt_kind == "prompt_text":
            prompt = self._runner.engine.tokenizer.encode(request.prompt_text)
        else:
            prompt = list(request.prompt_token_ids.ids)
        generation = GenerationRequest(
            request_id=request.request_id or uuid.uuid4().hex,
            prompt_token_ids=prompt,
            options=sampling_options(request.sampling_params),
            resume_output_token_ids=list(request.resume_output_token_ids),
            min_weight_version=request.min_weight_version,
            priority=request.priority,
            return_text=request.return_text,
        )
        stream = self._runner.submit(generation)
        # A client that goes away must not leave its request decoding: abort it (a no-op
        # for a request that already finished).
        context.add_callback(lambda: self._runner.post(lambda engine: engine.abort([generation.request_id])))
        for update in stream:
            yield _chunk(update)

    def Abort(self, request: inference_pb2.AbortRequest, context: grpc.ServicerContext) -> inference_pb2.AbortResponse:
        ids = None if request.abort_all else list(request.request_ids)
        partials, not_running = self._runner.call(lambda engine: engine.abort(ids))
        return inference_pb2.AbortResponse(
            partial_generations=[_partial(p) for p in partials], not_running_request_ids=not_running
        )

    def Sleep(self, request: inference_pb2.SleepRequest, context: grpc.ServicerContext) -> inference_pb2.SleepResponse:
        if request.level not in (inference_pb2.SLEEP_LEVEL_1, inference_pb2.SLEEP_LEVEL_2):
            raise InvalidArgument("level must be SLEEP_LEVEL_1 or SLEEP_LEVEL_2", field="level")
        level = 1 if request.level == inference_pb2.SLEEP_LEVEL_1 else 2
        start = time.perf_counter()
        freed = self._runner.call(lambda engine: engine.sleep(level))
        return inference_pb2.SleepResponse(
            state=SLEEP_STATES[self._runner.engine.sleep_state],
            freed_device_bytes=freed,
            duration_ms=(time.perf_counter() - start) * 1e3,
        )

    def WakeUp(self, request: inference_pb2.WakeUpRequest, context: grpc.ServicerContext) -> inference_pb2.WakeUpResponse:
        unknown = [p for p in request.pools if p not in MEMORY_POOLS]
        if unknown:
            raise InvalidArgument(f"unknown memory pools {unknown}", field="pools")
        pools = [MEMORY_POOLS[p] for p in request.pools]
        start = time.perf_counter()

        def wake(engine: Engine) -> tuple[SleepState, int]:
            engine.wake_up(pools)
            return engine.sleep_state, engine.weight_bytes() + engine.kv_cache_bytes()

        state, used = self._runner.call(wake)
        return inference_pb2.WakeUpResponse(
            state=SLEEP_STATES[state], device_memory_used_bytes=used, duration_ms=(time.perf_counter() - start) * 1e3
        )

    def UpdateWeights(
        self, request_iterator: Iterator[inference_pb2.UpdateWeightsRequest], context: grpc.ServicerContext
    ) -> Iterator[inference_pb2.UpdateWeightsResponse]:
        session = WeightUpdateSession(self._runner)
        yield from session.run(request_iterator)

    def GetModelInfo(
        self, request: inference_pb2.GetModelInfoRequest, context: grpc.ServicerContext
    ) -> inference_pb2.GetModelInfoResponse:
        def describe(engine: Engine) -> inference_pb2.GetModelInfoResponse:
            tokenizer = engine.tokenizer
            info = inference_pb2.TokenizerInfo(
                name_or_path=self._description.tokenizer_name,
                vocab_size=tokenizer.vocab_size,
                eos_token_ids=list(engine.eos_token_ids),
                chat_template=self._description.chat_template,
            )
            if tokenizer.bos_token_id is not None:
                info.bos_token_id = tokenizer.bos_token_id
            if tokenizer.pad_token_id is not None:
                info.pad_token_id = tokenizer.pad_token_id
            return inference_pb2.GetModelInfoResponse(
                architecture=self._description.architecture,
                model_preset=self._description.model_preset,
                config_json=self._description.config_json,
                vocab_size=engine.vocab_size,
                max_context_length=engine.max_context_length,
                weight_version=common_pb2.WeightVersion(version=engine.weight_version if engine.has_weights else 0),
                sleep_state=SLEEP_STATES[engine.sleep_state],
                tokenizer=info,
                backend=BACKENDS[engine.backend],
                tensor_parallel_size=engine.tensor_parallel_size,
                dtype=TENSOR_DTYPES.get(str(engine.dtype), common_pb2.TENSOR_DTYPE_UNSPECIFIED),
                devices=list(self._description.devices),
                max_running_requests=engine.config.max_running_requests,
            )

        return self._runner.call(describe)

    def GetStats(self, request: inference_pb2.GetStatsRequest, context: grpc.ServicerContext) -> inference_pb2.GetStatsResponse:
        stats = self._runner.call(lambda engine: engine.stats())
        return inference_pb2.GetStatsResponse(
            running_requests=stats.running_requests,
            waiting_requests=stats.waiting_requests,
            kv_cache_usage=stats.kv_cache_usage,
            kv_cache_capacity_tokens=stats.kv_cache_capacity_tokens,
            prompt_tokens_total=stats.prompt_tokens_total,
            cached_prompt_tokens_total=stats.cached_prompt_tokens_total,
            generated_tokens_total=stats.generated_tokens_total,
            generation_tokens_per_second=stats.generation_tokens_per_second,
            weight_version=stats.weight_version,
        )
