"""The inference service: rollout engine with streaming generation and in-place weight updates.

Until its domain logic lands, every RPC of InferenceService answers UNIMPLEMENTED (the
generated servicer's default) while the service itself runs, answers health and exports
metrics like any other.
"""

from __future__ import annotations

from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc


def build(context: ServiceContext) -> list[ServicerBinding]:
    servicer = inference_pb2_grpc.InferenceServiceServicer()
    return [ServicerBinding.generated(inference_pb2, inference_pb2_grpc, "InferenceService", servicer)]


SERVICE = ServiceSpec("inference", "rollout engine with streaming generation and in-place weight updates", ServiceSettings, build)
