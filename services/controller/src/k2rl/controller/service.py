"""The controller service: the RL loop, run records and a view of the whole system."""

from __future__ import annotations

from functools import partial

from pydantic import Field

from k2rl.controller.run_store import RunStore
from k2rl.controller.runs import RunManager
from k2rl.controller.scheduler.clients import ServiceClients
from k2rl.controller.servicer import ControllerServicer
from k2rl.controller.v1 import controller_pb2, controller_pb2_grpc
from k2rl.core.client import ClientOptions, create_stub
from k2rl.core.config import ServiceSettings
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.core.store import open_store
from k2rl.models.tokenizer import load_tokenizer


class ControllerSettings(ServiceSettings):
    colocated: bool = Field(True, description="colocated mode: inference sleeps and the trainer offloads each "
                                               "iteration (K2 section 3.3.1); false = disaggregated")
    context_length: int = Field(512, gt=1, description="token budget of an environment that sets none")


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, ControllerSettings)
    options = ClientOptions.from_settings(settings, context.tracer_provider)
    store = open_store(settings.state_url)
    context.on_shutdown.append(store.close)
    dependencies = {k: v for k, v in settings.dependencies.items() if k != "controller"}
    stub = partial(_stub, options)
    runs = RunManager(RunStore(store), lambda: ServiceClients.connect(dependencies, stub), load_tokenizer,
                      context_length=settings.context_length, colocated=settings.colocated)
    servicer = ControllerServicer(settings, options, runs)
    return [ServicerBinding.generated(controller_pb2, controller_pb2_grpc, "ControllerService", servicer)]


def _stub(options: ClientOptions, stub_type: type, address: str) -> object:
    return create_stub(stub_type, address, options)


SERVICE = ServiceSpec("controller", "RL loop, run records and system status", ControllerSettings, build)
