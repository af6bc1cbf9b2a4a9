"""Typed service configuration.

Precedence, lowest to highest: defaults < YAML file < environment (``K2RL_*``) < CLI flags.
A YAML file may hold keys shared by every service at the top level and a section per
service name that overrides them, so one file configures a whole deployment::

    auth_token: change-me
    log_level: INFO
    trainer:
      port: 50061

Environment variables use the ``K2RL_`` prefix (``K2RL_PORT``, ``K2RL_AUTH_TOKEN``); maps use
JSON (``K2RL_DEPENDENCIES='{"judge": "judge:50056"}'``). ``REDIS_URL`` and the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` are read under their usual names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

SERVICE_NAMES: tuple[str, ...] = (
    "trainer",
    "inference",
    "checkpoint_engine",
    "controller",
    "sandbox",
    "judge",
)

# One source of truth for default ports: `k2rl up`, docs and deploy files all read these.
DEFAULT_GRPC_PORTS: dict[str, int] = {
    "trainer": 50051,
    "inference": 50052,
    "checkpoint_engine": 50053,
    "controller": 50054,
    "sandbox": 50055,
    "judge": 50056,
}
DEFAULT_METRICS_PORTS: dict[str, int] = {name: 9400 + i + 1 for i, name in enumerate(SERVICE_NAMES)}

MiB = 1024 * 1024


def default_dependencies(host: str = "127.0.0.1") -> dict[str, str]:
    """Addresses of every service on one host at the default ports."""
    return {name: f"{host}:{port}" for name, port in DEFAULT_GRPC_PORTS.items()}


class ServiceSettings(BaseSettings):
    """Settings every k2rl service shares. Services subclass it to add their own keys."""

    model_config = SettingsConfigDict(
        env_prefix="K2RL_", extra="forbid", validate_default=True, populate_by_name=True
    )

    service: str = Field(description="service name, one of SERVICE_NAMES")
    host: str = Field("127.0.0.1", description="address the gRPC server binds")
    port: int = Field(0, ge=0, le=65535, description="gRPC port; 0 = the service's default")
    metrics_port: int = Field(
        0, ge=0, le=65535, description="Prometheus /metrics HTTP port; 0 = the service's default"
    )
    metrics_host: str = "127.0.0.1"
    max_message_bytes: int = Field(64 * MiB, gt=0, description="max gRPC message, both ways")
    max_workers: int = Field(16, gt=0, description="gRPC handler threads")
    grace_period_s: float = Field(10.0, ge=0, description="drain time on SIGTERM")
    auth_token: SecretStr | None = Field(
        None, description="shared token; when set every RPC but health needs `Bearer <token>`"
    )
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = Field(None, description="CA bundle clients use to verify servers")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"
    otlp_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("K2RL_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="OTLP/gRPC collector; tracing export is off when unset",
    )
    trace_file: Path | None = Field(
        None, description="append finished spans as JSON lines here (debugging, tests)"
    )
    state_url: str | None = Field(
        None,
        validation_alias=AliasChoices("K2RL_STATE_URL", "REDIS_URL"),
        description="redis://... for Redis; unset = embedded SQLite",
    )
    dependencies: dict[str, str] = Field(
        default_factory=default_dependencies, description="service name -> host:port"
    )
    client_timeout_s: float = Field(30.0, gt=0, description="default deadline of outgoing RPCs")

    @field_validator("service")
    @classmethod
    def _known_service(cls, value: str) -> str:
        if value not in SERVICE_NAMES:
            raise ValueError(f"unknown service {value!r}; expected one of {', '.join(SERVICE_NAMES)}")
        return value

    @field_validator("tls_key_file")
    @classmethod
    def _key_needs_cert(cls, value: Path | None, info: Any) -> Path | None:
        if value is not None and info.data.get("tls_cert_file") is None:
            raise ValueError("tls_key_file is set but tls_cert_file is not; TLS needs both")
        return value

    @property
    def grpc_port(self) -> int:
        return self.port or DEFAULT_GRPC_PORTS[self.service]

    @property
    def prometheus_port(self) -> int:
        return self.metrics_port or DEFAULT_METRICS_PORTS[self.service]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    def token(self) -> str | None:
        return self.auth_token.get_secret_value() if self.auth_token else None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # init kwargs carry both CLI flags (highest) and the YAML layer; see load_settings.
        return init_settings, env_settings


def read_yaml_layer(path: Path | None, service: str) -> dict[str, Any]:
    """Top-level keys of the YAML file overlaid with its ``<service>:`` section."""
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping at the top level")
    common = {k: v for k, v in data.items() if k not in SERVICE_NAMES}
    section = data.get(service) or {}
    if not isinstance(section, dict):
        raise ValueError(f"section {service!r} in {path} must be a mapping")
    return {**common, **section}


def load_settings(
    settings_type: type[ServiceSettings],
    service: str,
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> ServiceSettings:
    """Build settings with precedence defaults < YAML < env < ``overrides`` (CLI flags).

    YAML values go in as init kwargs, which pydantic-settings ranks above the environment,
    so any YAML key the environment also sets is dropped here to keep env above YAML.
    """
    yaml_layer = read_yaml_layer(config_file, service)
    env_keys = _keys_set_by_environment(settings_type)
    yaml_layer = {k: v for k, v in yaml_layer.items() if k not in env_keys}
    cli_layer = {k: v for k, v in (overrides or {}).items() if v is not None}
    return settings_type(**{**yaml_layer, **cli_layer, "service": service})


def _keys_set_by_environment(settings_type: type[ServiceSettings]) -> set[str]:
    prefix = settings_type.model_config.get("env_prefix", "")
    present = {k.upper() for k in os.environ}
    keys: set[str] = set()
    for name, field in settings_type.model_fields.items():
        aliases = getattr(field.validation_alias, "choices", None) or []
        candidates = {f"{prefix}{name}".upper(), *(str(a).upper() for a in aliases)}
        if candidates & present:
            keys.add(name)
    return keys
