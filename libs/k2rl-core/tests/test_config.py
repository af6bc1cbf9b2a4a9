from pathlib import Path

import pytest
from pydantic import ValidationError

from k2rl.core.config import DEFAULT_GRPC_PORTS, ServiceSettings, load_settings


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "k2rl.yaml"
    path.write_text(text)
    return path


def test_defaults_give_each_service_its_own_port() -> None:
    ports = {load_settings(ServiceSettings, name).grpc_port for name in DEFAULT_GRPC_PORTS}
    assert len(ports) == len(DEFAULT_GRPC_PORTS)
    assert load_settings(ServiceSettings, "judge").address == f"127.0.0.1:{DEFAULT_GRPC_PORTS['judge']}"


def test_precedence_defaults_yaml_env_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = write_yaml(tmp_path, "log_level: WARNING\nmax_workers: 3\ngrace_period_s: 4\n"
                                  "trainer:\n  port: 6001\n  max_workers: 5\n")
    monkeypatch.setenv("K2RL_GRACE_PERIOD_S", "7")
    monkeypatch.setenv("K2RL_LOG_LEVEL", "ERROR")
    settings = load_settings(ServiceSettings, "trainer", config, {"log_level": "DEBUG", "host": None})
    assert settings.port == 6001            # service section beats top level
    assert settings.max_workers == 5        # service section beats top level
    assert settings.grace_period_s == 7     # env beats yaml
    assert settings.log_level == "DEBUG"    # cli beats env
    assert settings.host == "127.0.0.1"     # an unset CLI flag does not override
    other = load_settings(ServiceSettings, "judge", config)
    assert other.max_workers == 3 and other.port == 0


def test_standard_env_names_are_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6399/0")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("K2RL_DEPENDENCIES", '{"judge": "judge:1"}')
    settings = load_settings(ServiceSettings, "controller")
    assert settings.state_url == "redis://127.0.0.1:6399/0"
    assert settings.otlp_endpoint == "http://127.0.0.1:4317"
    assert settings.dependencies == {"judge": "judge:1"}


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("prot: 1\n", "prot"),                        # typo'd key is an error, not ignored
        ("port: 70000\n", "port"),
        ("tls_key_file: /k.pem\n", "tls_cert_file"),
        ("- a\n- b\n", "mapping"),
    ],
)
def test_bad_config_fails_with_a_message_naming_the_problem(tmp_path: Path, yaml_text: str, message: str) -> None:
    with pytest.raises((ValidationError, ValueError), match=message):
        load_settings(ServiceSettings, "trainer", write_yaml(tmp_path, yaml_text))


def test_unknown_service_and_missing_file_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="unknown service"):
        load_settings(ServiceSettings, "trainr")
    with pytest.raises(FileNotFoundError):
        load_settings(ServiceSettings, "trainer", tmp_path / "missing.yaml")


def test_aliased_keys_are_accepted_by_their_own_name_in_yaml(tmp_path: Path) -> None:
    config = write_yaml(tmp_path, "state_url: redis://127.0.0.1:1/0\notlp_endpoint: http://127.0.0.1:4317\n")
    settings = load_settings(ServiceSettings, "controller", config)
    assert settings.state_url == "redis://127.0.0.1:1/0"
    assert settings.otlp_endpoint == "http://127.0.0.1:4317"
