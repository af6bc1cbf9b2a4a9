"""The sandbox service: isolated execution of untrusted code.

Until its domain logic lands, every RPC of SandboxService answers UNIMPLEMENTED (the
generated servicer's default) while the service itself runs, answers health and exports
metrics like any other.
"""

from __future__ import annotations

from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.sandbox.v1 import sandbox_pb2, sandbox_pb2_grpc


def build(context: ServiceContext) -> list[ServicerBinding]:
    servicer = sandbox_pb2_grpc.SandboxServiceServicer()
    return [ServicerBinding.generated(sandbox_pb2, sandbox_pb2_grpc, "SandboxService", servicer)]


SERVICE = ServiceSpec("sandbox", "isolated execution of untrusted code", ServiceSettings, build)
