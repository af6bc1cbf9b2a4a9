"""The checkpoint_engine service: versioned, pipelined weight broadcast from trainer to inference.

Until its domain logic lands, every RPC of CheckpointEngineService answers UNIMPLEMENTED (the
generated servicer's default) while the service itself runs, answers health and exports
metrics like any other.
"""

from __future__ import annotations

from k2rl.checkpoint_engine.v1 import checkpoint_engine_pb2, checkpoint_engine_pb2_grpc
from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec


def build(context: ServiceContext) -> list[ServicerBinding]:
    servicer = checkpoint_engine_pb2_grpc.CheckpointEngineServiceServicer()
    return [ServicerBinding.generated(checkpoint_engine_pb2, checkpoint_engine_pb2_grpc, "CheckpointEngineService", servicer)]


SERVICE = ServiceSpec("checkpoint_engine", "versioned, pipelined weight broadcast from trainer to inference", ServiceSettings, build)
