"""The replica side of one UpdateWeights stream (one version, one transaction).

Buckets are verified and copied out of the checkpoint engine's IPC slots by
``k2rl.weights.WeightReceiver`` as they arrive (each acknowledged with ``bucket_loaded`` so
the engine can reuse the slot); with the vLLM backend each vLLM worker runs its own
receiver and ``vllm_backend.WorkerReceiver`` only passes the metadata on. Nothing reaches
the model before ``commit``: then the received tensors are staged next to the served
weights and swapped in between two scheduler steps (``Engine.commit_weights``; the vLLM
workers load theirs with ``load_weights``). With the native engine's standby parameter set
on, the receiver copies straight into it (``destinations``), so staging adopts those
tensors without a copy and no update after the first allocates. Meanwhile the replica
keeps serving its previous version; if the stream breaks off, the partial update is
dropped and the previous version stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from k2rl.common.v1 import common_pb2
from k2rl.core.errors import InvalidArgument
from k2rl.inference.engine import Engine
from k2rl.inference.runner import EngineRunner
from k2rl.inference.v1 import inference_pb2
from k2rl.inference.vllm_backend import VllmEngine, WorkerReceiver, WorkerWeightUpdate
from k2rl.inference.weights import (
    InFlightPolicy,
    LayoutMismatch,
    WeightStager,
    WeightUpdateOutcome,
    served_tensors,
)
from k2rl.weights import ChecksumMismatch, LayoutError, Selector, WeightReceiver
from k2rl.weights import proto as wire

OUTCOMES = {
    WeightUpdateOutcome.APPLIED: common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED,
    WeightUpdateOutcome.ALREADY_CURRENT: common_pb2.WEIGHT_UPDATE_OUTCOME_ALREADY_CURRENT,
    WeightUpdateOutcome.STALE_VERSION: common_pb2.WEIGHT_UPDATE_OUTCOME_STALE_VERSION,
    WeightUpdateOutcome.LAYOUT_MISMATCH: common_pb2.WEIGHT_UPDATE_OUTCOME_LAYOUT_MISMATCH,
    WeightUpdateOutcome.BUSY: common_pb2.WEIGHT_UPDATE_OUTCOME_BUSY,
    WeightUpdateOutcome.TRANSFER_FAILED: common_pb2.WEIGHT_UPDATE_OUTCOME_TRANSFER_FAILED,
}
POLICIES = {
    inference_pb2.IN_FLIGHT_POLICY_UNSPECIFIED: InFlightPolicy.REFUSE,
    inference_pb2.IN_FLIGHT_POLICY_REFUSE: InFlightPolicy.REFUSE,
    inference_pb2.IN_FLIGHT_POLICY_PAUSE: InFlightPolicy.PAUSE,
    inference_pb2.IN_FLIGHT_POLICY_ABORT: InFlightPolicy.ABORT,
}


class _Refused(Exception):
    def __init__(self, outcome: int, code: str, message: str) -> None:
        super().__init__(message)
        self.outcome, self.code, self.message = outcome, code, message


class WeightUpdateSession:
    def __init__(self, runner: EngineRunner) -> None:
        self._runner = runner
        self._start = time.perf_counter()
        self._bytes = 0

    def run(self, requests: Iterator[inference_pb2.UpdateWeightsRequest]) -> Iterator[inference_pb2.UpdateWeightsResponse]:
        first = next(requests, None)
        if first is None or first.WhichOneof("step") != "begin":
            raise InvalidArgument("an UpdateWeights stream must start with begin", field="begin")
        begin = first.begin
        version = begin.version.version
        if version == 0:
            raise InvalidArgument("version 0 means 'no weights' and cannot be installed", field="begin.version")
        policy = POLICIES.get(begin.in_flight_policy)
        if policy is None:
            raise InvalidArgument(f"unknown in_flight_policy {begin.in_flight_policy}", field="begin.in_flight_policy")
        started = self._runner.call(lambda engine: self._begin(engine, version, policy))
        if isinstance(started, WeightUpdateOutcome):
            yield self._result(OUTCOMES[started])
            return
        stager, names = started
        receiver = (stager.receiver(self._runner.call) if isinstance(stager, WorkerWeightUpdate)
                    else WeightReceiver([Selector(name) for name in names]))
        try:
            yield from self._receive(requests, begin, receiver, stager, policy)
        finally:
            receiver.close()
            if isinstance(stager, WeightStager):
                stager.close()  # after a failure or refusal: the standby set goes back unused

    @staticmethod
    def _begin(engine: Engine | VllmEngine, version: int,
               policy: InFlightPolicy) -> WeightUpdateOutcome | tuple[WeightStager | WorkerWeightUpdate, list[str]]:
        if policy is InFlightPolicy.REFUSE and engine.has_work:
            return WeightUpdateOutcome.BUSY
        begun = engine.begin_weight_update(version)
        if isinstance(begun, WeightUpdateOutcome):
            return begun
        return begun, list(served_tensors(engine.model))

    def _receive(
        self,
        requests: Iterator[inference_pb2.UpdateWeightsRequest],
        begin: inference_pb2.UpdateWeightsBegin,
        receiver: WeightReceiver | WorkerReceiver,
        stager: WeightStager | WorkerWeightUpdate,
        policy: InFlightPolicy,
    ) -> Iterator[inference_pb2.UpdateWeightsResponse]:
        version, bucket_count = begin.version.version, begin.bucket_count
        try:
            slots = {s.slot: wire.descriptor_from_proto(s.handle) for s in begin.slots}
        except ValueError as error:
            raise InvalidArgument(str(error), field="begin.slots") from None
        verify = not begin.skip_checksum_verification
        try:
            if isinstance(receiver, WeightReceiver) and isinstance(stager, WeightStager):
                receiver.begin(version, bucket_count, slots, verify=verify, destinations=stager.destinations)
            else:
                receiver.begin(version, bucket_count, slots, verify=verify)
        except OSError as error:
            yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_TRANSFER_FAILED, "IPC_OPEN_FAILED", str(error))
            return
        expected = 0
        try:
            for message in requests:
                step = message.WhichOneof("step")
                if step == "bucket":
                    bucket = message.bucket
                    if bucket.slot not in slots:
                        raise InvalidArgument(f"bucket names slot {bucket.slot}, which begin did not announce",
                                              field="bucket.slot")
                    if bucket.bucket.index != expected or expected >= bucket_count:
                        raise InvalidArgument(f"bucket {bucket.bucket.index} arrived, expected bucket {expected}",
                                              field="bucket.bucket.index")
                    self._bytes += receiver.load_bucket(wire.bucket_from_proto(bucket.bucket), bucket.slot,
                                                        bucket.slot_byte_offset)
                    expected += 1
                    yield inference_pb2.UpdateWeightsResponse(
                        bucket_loaded=inference_pb2.UpdateWeightsBucketLoaded(bucket_index=bucket.bucket.index,
                                                                              slot=bucket.slot))
                elif step == "commit":
                    if message.commit.version != version or message.commit.bucket_count != bucket_count:
                        raise InvalidArgument("commit does not match begin (version / bucket_count)", field="commit")
                    if expected != bucket_count:
                        raise InvalidArgument(f"commit after {expected} of {bucket_count} buckets", field="commit")
                    yield self._commit(receiver, stager, policy, version, bucket_count)
                    return
                else:
                    raise InvalidArgument("begin may only be sent once per stream", field="begin")
        except ChecksumMismatch as error:
            yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH, "CHECKSUM_MISMATCH", str(error))
            return
        except LayoutError as error:
            yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_LAYOUT_MISMATCH, "LAYOUT_MISMATCH", str(error))
            return
        # The request stream ended without a commit: the update broke off.
        yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_TRANSFER_FAILED, "NO_COMMIT",
                           "the stream ended before commit; the previous version stays")

    def _commit(
        self, receiver: WeightReceiver | WorkerReceiver, stager: WeightStager | WorkerWeightUpdate,
        policy: InFlightPolicy, version: int, bucket_count: int,
    ) -> inference_pb2.UpdateWeightsResponse:
        try:
            tensors = receiver.commit(version, bucket_count)
            for name, tensor in tensors.items():
                stager.load(name, tensor, adopt=True)  # the receiver's copies are ours to keep
        except (LayoutError, LayoutMismatch) as error:
            return self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_LAYOUT_MISMATCH, "LAYOUT_MISMATCH", str(error))
        outcome = self._runner.call(lambda engine: engine.commit_weights(stager, policy))
        return self._result(OUTCOMES[outcome])

    def _result(self, outcome: int, code: str = "", message: str = "") -> inference_pb2.UpdateWeightsResponse:
        engine = self._runner.engine
        result = inference_pb2.UpdateWeightsResult(
            outcome=outcome,
            current_version=common_pb2.WeightVersion(version=engine.weight_version if engine.has_weights else 0),
            bytes_loaded=self._bytes,
            duration_ms=(time.perf_counter() - self._start) * 1e3,
        )
        if code:
            result.error.CopyFrom(common_pb2.ErrorDetail(code=code, message=message, retryable=True))
        return inference_pb2.UpdateWeightsResponse(result=result)
