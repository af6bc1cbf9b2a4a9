"""The engine side of one InferenceService.UpdateWeights stream to one replica.

The worker announces the IPC slots (begin), names each bucket as it lands in a slot, and
must not overwrite a slot before the replica acknowledged the bucket in it. Every wait is
bounded: a replica that stops answering fails its own update, never the whole version.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

import grpc

from k2rl.common.v1 import common_pb2
from k2rl.inference.v1 import inference_pb2
from k2rl.weights import BucketLayout
from k2rl.weights import proto as wire

_END = object()


class ReplicaSession:
    def __init__(self, stub: object, replica_id: str, begin: inference_pb2.UpdateWeightsBegin, timeout_s: float) -> None:
        self.replica_id = replica_id
        self._timeout_s = timeout_s
        self._requests: queue.Queue[object] = queue.Queue()
        self._acked = -1
        self._changed = threading.Condition()
        self.result: inference_pb2.UpdateWeightsResult | None = None
        self.error: str | None = None
        self._requests.put(inference_pb2.UpdateWeightsRequest(begin=begin))
        self._call = stub.UpdateWeights(self._request_stream())  # type: ignore[attr-defined]
        self._reader = threading.Thread(target=self._read, name=f"ce-push-{replica_id}", daemon=True)
        self._reader.start()

    @property
    def failed(self) -> bool:
        return self.error is not None or (self.result is not None and self.result.outcome not in (
            common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED, common_pb2.WEIGHT_UPDATE_OUTCOME_ALREADY_CURRENT))

    def send_bucket(self, bucket: BucketLayout, slot: int, slot_byte_offset: int = 0) -> None:
        if not self.failed:
            message = inference_pb2.UpdateWeightsBucket(bucket=wire.bucket_to_proto(bucket), slot=slot,
                                                        slot_byte_offset=slot_byte_offset)
            self._requests.put(inference_pb2.UpdateWeightsRequest(bucket=message))

    def wait_acked(self, bucket_index: int) -> None:
        """Block until the replica consumed ``bucket_index`` (or failed / timed out)."""
        deadline = time.monotonic() + self._timeout_s
        with self._changed:
            while self._acked < bucket_index and not self.failed and self.result is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(f"no acknowledgement of bucket {bucket_index} within {self._timeout_s:.0f} s")
                    return
                self._changed.wait(left)

    def commit(self, version: int, bucket_count: int) -> None:
        if not self.failed:
            commit = inference_pb2.UpdateWeightsCommit(version=version, bucket_count=bucket_count)
            self._requests.put(inference_pb2.UpdateWeightsRequest(commit=commit))
        self._requests.put(_END)

    def wait_result(self) -> None:
        deadline = time.monotonic() + self._timeout_s
        with self._changed:
            while self.result is None and self.error is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._fail(f"no result within {self._timeout_s:.0f} s of commit")
                    return
                self._changed.wait(left)

    def cancel(self, reason: str) -> None:
        with self._changed:
            if self.result is None and self.error is None:
                self.error = reason
            self._changed.notify_all()
        self._requests.put(_END)
        self._call.cancel()

    def _fail(self, reason: str) -> None:
        self.error = reason
        self._changed.notify_all()
        self._requests.put(_END)
        self._call.cancel()

    def _request_stream(self) -> Iterator[inference_pb2.UpdateWeightsRequest]:
        while True:
            item = self._requests.get()
            if item is _END:
                return
            yield item  # type: ignore[misc]

    def _read(self) -> None:
        try:
            for response in self._call:
                with self._changed:
                    if response.WhichOneof("event") == "bucket_loaded":
                        self._acked = max(self._acked, response.bucket_loaded.bucket_index)
                    else:
                        self.result = response.result
                    self._changed.notify_all()
            with self._changed:
                if self.result is None and self.error is None:
                    self.error = "the replica closed the stream without a result"
        except grpc.RpcError as error:
            with self._changed:
                if self.error is None and self.result is None:
                    self.error = f"UpdateWeights failed: {error.code().name}: {error.details()}"
        finally:
            with self._changed:
                self._changed.notify_all()
            self._requests.put(_END)
