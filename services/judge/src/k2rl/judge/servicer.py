"""gRPC glue of JudgeService: decode, call the ``Judge``, encode. No logic of its own."""

from __future__ import annotations

import hashlib
import math
import time

import grpc

from k2rl.core.errors import InvalidArgument, ResourceExhausted
from k2rl.judge.convert import (
    compare_response_to_pb,
    rubrics_from_pb,
    score_item_from_pb,
    score_response_to_pb,
    turns_from_pb,
)
from k2rl.judge.dataset import Sample
from k2rl.judge.engine import Judge
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc


class JudgeServicer(judge_pb2_grpc.JudgeServiceServicer):
    def __init__(self, judge: Judge, critic_name: str, max_batch_size: int) -> None:
        self._judge = judge
        self._critic_name = critic_name
        self._max_batch_size = max_batch_size

    def Score(self, request: judge_pb2.ScoreRequest, context: grpc.ServicerContext) -> judge_pb2.ScoreResponse:
        return score_response_to_pb(self._judge.score(score_item_from_pb(request)))

    def ScoreBatch(self, request: judge_pb2.ScoreBatchRequest,
                   context: grpc.ServicerContext) -> judge_pb2.ScoreBatchResponse:
        if len(request.requests) > self._max_batch_size:
            raise ResourceExhausted(
                f"{len(request.requests)} items, at most {self._max_batch_size} per ScoreBatch; split the batch",
                field="requests")
        items = []
        for i, item in enumerate(request.requests):
            try:
                items.append(score_item_from_pb(item))
            except InvalidArgument as error:
                raise InvalidArgument(error.message, field=f"requests[{i}].{error.field}") from None
        return judge_pb2.ScoreBatchResponse(responses=[score_response_to_pb(v) for v in self._judge.score_batch(items)])

    def Compare(self, request: judge_pb2.CompareRequest,
                context: grpc.ServicerContext) -> judge_pb2.CompareResponse:
        if not request.response_a.strip() and not request.response_b.strip():
            raise InvalidArgument("both responses are empty", field="response_a")
        started = time.perf_counter()
        rubrics = rubrics_from_pb(list(request.rubrics), "rubrics")
        comparison = self._judge.compare(
            request.prompt, turns_from_pb(list(request.conversation), "conversation"), request.response_a,
            request.response_b, rubrics, request.position_swap, request.reference_response,
        )
        return compare_response_to_pb(comparison, rubrics, self._critic_name,
                                       (time.perf_counter() - started) * 1000)

    def ExportCriticData(self, request: judge_pb2.ExportCriticDataRequest,
                         context: grpc.ServicerContext) -> judge_pb2.ExportCriticDataResponse:
        if not request.prompt.strip():
            raise InvalidArgument("the prompt is empty", field="prompt")
        if not math.isfinite(request.min_margin) or request.min_margin < 0:
            raise InvalidArgument(f"min_margin {request.min_margin} must be finite and >= 0", field="min_margin")
        samples = []
        for i, sample in enumerate(request.samples):
            if not math.isfinite(sample.reward):
                raise InvalidArgument(f"reward {sample.reward} is not finite", field=f"samples[{i}].reward")
            samples.append(Sample(sample.response, sample.reward, sample.verifier))
        prompt_id = request.prompt_id or "sha256:" + hashlib.sha256(request.prompt.encode()).hexdigest()[:16]
        rows, path = self._judge.export_critic_data(prompt_id, request.prompt, samples, request.dataset,
                                                    request.min_margin or None)
        return judge_pb2.ExportCriticDataResponse(rows_written=rows, path=path)
