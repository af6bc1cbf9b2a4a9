"""The trainer service: torch.distributed pretrain / SFT / RL training with MuonClip.

Until its domain logic lands, every RPC of TrainerService answers UNIMPLEMENTED (the
generated servicer's default) while the service itself runs, answers health and exports
metrics like any other.
"""

from __future__ import annotations

from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.trainer.v1 import trainer_pb2, trainer_pb2_grpc


def build(context: ServiceContext) -> list[ServicerBinding]:
    servicer = trainer_pb2_grpc.TrainerServiceServicer()
    return [ServicerBinding.generated(trainer_pb2, trainer_pb2_grpc, "TrainerService", servicer)]


SERVICE = ServiceSpec("trainer", "torch.distributed pretrain / SFT / RL training with MuonClip", ServiceSettings, build)
