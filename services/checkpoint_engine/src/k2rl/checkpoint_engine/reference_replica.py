"""A reference inference replica: the smallest InferenceService.UpdateWeights that is correct.

Serves InferenceService.UpdateWeights with k2rl.weights.WeightReceiver (the same receiver
the real inference service uses), for tests and benchmarks of the engine alone. It
registers with the coordinator and heartbeats its
version. After each applied version it writes what it holds to <out>/<name>.safetensors
(atomically), so the test can compare bytes with the trainer's. Like a real replica it keeps
two parameter sets, the one it serves and a standby one that the next update is written into
in place (no new allocation per version).

    python -m k2rl.checkpoint_engine.reference_replica --coordinator HOST:PORT --name r0 --out DIR [--selectors JSON]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import torch
from safetensors.torch import save_file

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2 as ce
from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2_grpc
from k2rl.common.v1 import common_pb2
from k2rl.core.net import free_loopback_port
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.weights import ChecksumMismatch, LayoutError, Selector, WeightReceiver
from k2rl.weights import proto as wire


class Replica(inference_pb2_grpc.InferenceServiceServicer):
    def __init__(self, selectors: list[Selector], out: Path, name: str, dump: bool = True) -> None:
        self.dump = dump
        self.receiver = WeightReceiver(selectors)
        self.version = common_pb2.WeightVersion()
        self.served: dict[str, torch.Tensor] = {}
        self.standby: dict[str, torch.Tensor] = {}  # the set before ``served``: the next update's destination
        self.out, self.name = out, name
        self.lock = threading.Lock()

    def UpdateWeights(self, requests, context):  # noqa: N802 - gRPC method name
        start = time.perf_counter()
        with self.lock:
            begin = next(requests).begin
            slots = {s.slot: wire.descriptor_from_proto(s.handle) for s in begin.slots}
            self.receiver.begin(begin.version.version, begin.bucket_count, slots, not begin.skip_checksum_verification,
                                destinations=self.standby)
            try:
                for request in requests:
                    if request.WhichOneof("step") == "bucket":
                        bucket = wire.bucket_from_proto(request.bucket.bucket)
                        self.receiver.load_bucket(bucket, request.bucket.slot, request.bucket.slot_byte_offset)
                        yield inference_pb2.UpdateWeightsResponse(bucket_loaded=inference_pb2.UpdateWeightsBucketLoaded(
                            bucket_index=bucket.index, slot=request.bucket.slot))
                    else:
                        loaded = self.receiver.bytes_loaded
                        tensors = self.receiver.commit(request.commit.version, request.commit.bucket_count)
                        if self.dump:
                            tmp = self.out / f".{self.name}.tmp"
                            save_file(tensors, str(tmp), metadata={"version": str(begin.version.version)})
                            os.replace(tmp, self.out / f"{self.name}.safetensors")
                        self.version = begin.version
                        self.standby, self.served = self.served, tensors
                        yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_APPLIED, None, loaded, start)
                        return
            except ChecksumMismatch as error:
                self.receiver.abort()
                yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_CHECKSUM_MISMATCH, error, 0, start)
            except LayoutError as error:
                self.receiver.abort()
                yield self._result(common_pb2.WEIGHT_UPDATE_OUTCOME_LAYOUT_MISMATCH, error, 0, start)
            finally:
                self.receiver.abort()

    def _result(self, outcome: int, error: Exception | None, loaded: int, start: float) -> inference_pb2.UpdateWeightsResponse:
        detail = common_pb2.ErrorDetail(code=common_pb2.WeightUpdateOutcome.Name(outcome), message=str(error)) if error else None
        return inference_pb2.UpdateWeightsResponse(result=inference_pb2.UpdateWeightsResult(
            outcome=outcome, current_version=self.version, error=detail, bytes_loaded=loaded,
            duration_ms=(time.perf_counter() - start) * 1000))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--selectors", default="[]")
    parser.add_argument("--no-dump", action="store_true", help="do not write applied tensors (benchmarks)")
    args = parser.parse_args()
    selectors = [Selector(**s) for s in json.loads(args.selectors)]
    replica = Replica(selectors, args.out, args.name, dump=not args.no_dump)
    server = grpc.server(futures.ThreadPoolExecutor(4))
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(replica, server)
    port = free_loopback_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stub = checkpoint_engine_pb2_grpc.CheckpointEngineServiceStub(grpc.insecure_channel(args.coordinator))
    register = ce.RegisterWorkerRequest(kind=ce.WORKER_KIND_INFERENCE_REPLICA, instance_name=args.name,
                                        address=f"127.0.0.1:{port}", devices=[ce.Device(node="localhost", name="cpu")])
    worker_id = stub.RegisterWorker(register, timeout=10).worker_id
    print(worker_id, flush=True)
    while True:
        time.sleep(0.3)
        try:
            stub.Heartbeat(ce.HeartbeatRequest(worker_id=worker_id, weight_version=replica.version.version), timeout=5)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                continue
            register.weight_version = replica.version.version
            worker_id = stub.RegisterWorker(register, timeout=10).worker_id


if __name__ == "__main__":
    main()
