"""The inference service: rollout engine with streaming generation and in-place weight updates.

``build`` loads the model and tokenizer, starts the native engine on its own thread, mounts
the gRPC servicer and starts the OpenAI-compatible HTTP API beside it.
"""

from __future__ import annotations

import json
import logging
import socket
from pathlib import Path
from typing import Any

import grpc
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc

from k2rl.core.client import ClientOptions, close_stub, create_stub
from k2rl.core.errors import InvalidArgument
from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.inference.config import InferenceSettings
from k2rl.inference.engine import Engine
from k2rl.inference.engine_link import EngineLink, ReplicaIdentity
from k2rl.inference.metrics import PrometheusObserver
from k2rl.inference.openai_api import OpenAIApi, OpenAIServer
from k2rl.inference.runner import EngineRunner
from k2rl.inference.servicer import InferenceServicer, ReplicaDescription
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.inference.vllm_backend import VllmEngine, import_vllm
from k2rl.models import ModelConfig, load_hf_config, load_model, to_hf_config
from k2rl.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def describe(settings: InferenceSettings, engine: Engine | VllmEngine) -> ReplicaDescription:
    config_file = Path(settings.model) / "config.json"
    hf_config = to_hf_config(engine.model.config)
    config_json = config_file.read_text() if config_file.is_file() else json.dumps(hf_config, indent=2, sort_keys=True)
    architectures = hf_config.get("architectures") or [type(engine.model).__name__]
    return ReplicaDescription(
        architecture=architectures[0],
        model_preset=settings.model,
        config_json=config_json,
        tokenizer_name=settings.tokenizer or settings.model,
        chat_template=getattr(engine.tokenizer, "chat_template", None) or "",
        devices=(str(engine.device),),
    )


def build_engine(settings: InferenceSettings, observer: PrometheusObserver | None = None) -> Engine | VllmEngine:
    if settings.backend == "vllm":
        return build_vllm_engine(settings, observer)
    model = load_model(settings.model, device=settings.device, dtype=settings.dtype, seed=settings.seed)
    tokenizer = load_tokenizer(settings.tokenizer or settings.model)
    return Engine(
        model, tokenizer, settings.engine_config(), weight_version=settings.initial_weight_version, observer=observer
    )


def build_vllm_engine(
    settings: InferenceSettings, observer: PrometheusObserver | None = None, vllm: Any = None
) -> VllmEngine:
    """Start vLLM on the HF checkpoint ``settings.model`` (``vllm``: the package, by default imported)."""
    model_dir = Path(settings.model)
    if not (model_dir / "config.json").is_file():
        raise InvalidArgument(
            f"backend 'vllm' serves an HF checkpoint directory; {settings.model!r} has no config.json", field="model")
    vllm = vllm or import_vllm()
    config = load_hf_config(model_dir)
    llm = vllm.LLM(**settings.vllm_options().engine_args())
    return VllmEngine(
        llm,
        vllm,
        load_tokenizer(settings.tokenizer or settings.model),
        config,
        tensor_parallel_size=settings.tensor_parallel_size,
        dtype=_served_dtype(settings.dtype, config),
        max_running_requests=settings.max_running_requests,
        max_context_length=settings.max_context_length,
        weight_version=settings.initial_weight_version,
        observer=observer,
    )


def _served_dtype(setting: str, config: ModelConfig) -> torch.dtype:
    if setting != "auto":
        return getattr(torch, setting)
    name = str(config.hf_extra.get("dtype") or config.hf_extra.get("torch_dtype") or "bfloat16")
    return getattr(torch, name.removeprefix("torch."))


def build(context: ServiceContext) -> list[ServicerBinding]:
    settings = context.settings
    assert isinstance(settings, InferenceSettings)
    observer = PrometheusObserver(context.metrics)
    engine = build_engine(settings, observer)
    runner = EngineRunner(engine, observer).start()
    context.on_shutdown.append(runner.stop)
    if settings.http_port >= 0:
        api = OpenAIApi(runner, settings.served_model_name or settings.model)
        try:
            http = OpenAIServer(api, settings.http_host, settings.http_port).start()
        except (OSError, TimeoutError):
            runner.stop()
            raise
        context.on_shutdown.append(http.stop)
        log.info("openai api", extra={"fields": {"url": http.base_url}})
    servicer = InferenceServicer(runner, describe(settings, engine))
    if settings.checkpoint_engine_replica:
        link = join_checkpoint_engine(settings, runner)
        context.on_shutdown.insert(0, link.stop)  # hooks run in reverse: deregister before the engine stops
    return [ServicerBinding.generated(inference_pb2, inference_pb2_grpc, "InferenceService", servicer)]


def join_checkpoint_engine(settings: InferenceSettings, runner: EngineRunner) -> EngineLink:
    """Register this replica with the checkpoint engine once its gRPC server answers."""
    address = settings.replica_address()
    identity = ReplicaIdentity(
        instance_name=settings.replica_name or f"{socket.gethostname()}/inference-{settings.grpc_port}",
        address=address, device=settings.device, labels={"backend": settings.backend, "model": settings.model})
    options = ClientOptions.from_settings(settings)
    link = EngineLink(identity, settings.dependencies["checkpoint_engine"], options,
                      lambda: runner.engine.weight_version if runner.engine.has_weights else 0)
    return link.start(lambda timeout_s: _serving(address, options, timeout_s))


def _serving(address: str, options: ClientOptions, timeout_s: float) -> bool:
    """Whether this replica answers SERVING at the address engine workers will dial."""
    stub = create_stub(health_pb2_grpc.HealthStub, address, options)
    try:
        response = stub.Check(health_pb2.HealthCheckRequest(), timeout=timeout_s, wait_for_ready=True)
        return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False
    finally:
        close_stub(stub)


SERVICE = ServiceSpec(
    "inference",
    "rollout engine with streaming generation and in-place weight updates",
    InferenceSettings,
    build,
)

__all__ = ["SERVICE", "InferenceSettings", "build_engine"]
