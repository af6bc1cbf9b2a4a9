"""The judge service: verifiable rewards, rubric critic and pairwise comparison.

Until its domain logic lands, every RPC of JudgeService answers UNIMPLEMENTED (the
generated servicer's default) while the service itself runs, answers health and exports
metrics like any other.
"""

from __future__ import annotations

from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.judge.v1 import judge_pb2, judge_pb2_grpc


def build(context: ServiceContext) -> list[ServicerBinding]:
    servicer = judge_pb2_grpc.JudgeServiceServicer()
    return [ServicerBinding.generated(judge_pb2, judge_pb2_grpc, "JudgeService", servicer)]


SERVICE = ServiceSpec("judge", "verifiable rewards, rubric critic and pairwise comparison", ServiceSettings, build)
