"""The controller service: the RL loop, run records and a view of the whole system."""

from __future__ import annotations

from k2rl.controller.servicer import ControllerServicer
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions
from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec


def build(context: ServiceContext) -> list[ServicerBinding]:
    options = ClientOptions.from_settings(context.settings, context.tracer_provider)
    servicer = ControllerServicer(context.settings, options)
    return [ServicerBinding.generated(controller_pb2, controller_pb2_grpc, "ControllerService", servicer)]


SERVICE = ServiceSpec("controller", "RL loop, run records and system status", ServiceSettings, build)
