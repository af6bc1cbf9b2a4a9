"""The inference service: rollout engine with streaming generation and in-place weight updates.

``build`` loads the model and tokenizer, starts the native engine on its own thread, mounts
the gRPC servicer and starts the OpenAI-compatible HTTP API beside it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from k2rl.core.server import ServiceContext, ServicerBinding, ServiceSpec
from k2rl.inference.config import InferenceSettings
from k2rl.inference.engine import Engine
from k2rl.inference.metrics import PrometheusObserver
from k2rl.inference.openai_api import OpenAIApi, OpenAIServer
from k2rl.inference.runner import EngineRunner
from k2rl.inference.servicer import InferenceServicer, ReplicaDescription
from k2rl.inference.v1 import inference_pb2, inference_pb2_grpc
from k2rl.models import load_model, to_hf_config
from k2rl.models.tokenizer import load_tokenizer

log = logging.getLogger(__name__)


def describe(settings: InferenceSettings, engine: Engine) -> ReplicaDescription:
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


def build_engine(settings: InferenceSettings, observer: PrometheusObserver | None = None) -> Engine:
    model = load_model(settings.model, device=settings.device, dtype=settings.dtype, seed=settings.seed)
    tokenizer = load_tokenizer(settings.tokenizer or settings.model)
    return Engine(
        model, tokenizer, settings.engine_config(), weight_version=settings.initial_weight_version, observer=observer
    )


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
    return [ServicerBinding.generated(inference_pb2, inference_pb2_grpc, "InferenceService", servicer)]


SERVICE = ServiceSpec(
    "inference",
    "rollout engine with streaming generation and in-place weight updates",
    InferenceSettings,
    build,
)

__all__ = ["SERVICE", "InferenceSettings", "build_engine"]
