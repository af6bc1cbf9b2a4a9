"""`k2rl up` as a user runs it: six real processes on loopback, probed, broken and stopped."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from k2rl.core.config import SERVICE_NAMES
from k2rl.core.launcher import LocalCluster
from k2rl.core.net import free_loopback_ports
from k2rl.core.roundtrip import round_trip

K2RL = [sys.executable, "-m", "k2rl.core.cli"]


def test_up_check_round_trips_every_service_and_stops_cleanly(tmp_path: Path) -> None:
    result = subprocess.run(
        [*K2RL, "up", "--check", "--free-ports", "--log-dir", str(tmp_path / "logs")],
        capture_output=True, text=True, timeout=240, env={**os.environ, "COLUMNS": "200"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    for name in SERVICE_NAMES:
        assert any(name in line and "SERVING" in line for line in output.splitlines()), output
    assert "stopped 6 services cleanly" in output
    for name in SERVICE_NAMES:
        log = (tmp_path / "logs" / f"{name}.log").read_text()
        assert '"msg": "serving"' in log and '"msg": "stopped"' in log, log


def test_kill_9_of_one_service_leaves_the_others_serving(tmp_path: Path) -> None:
    cluster = LocalCluster(("judge", "sandbox", "trainer"), free_ports=True, log_dir=tmp_path)
    cluster.start()
    try:
        cluster.wait_until_serving(120)
        os.kill(cluster.launched["judge"].process.pid, signal.SIGKILL)
        cluster.launched["judge"].process.wait(timeout=10)
        assert cluster.first_exited() is cluster.launched["judge"]
        probes = {p.name: p for p in cluster.probe_all()}
        assert probes["judge"].status == "UNREACHABLE"
        assert probes["sandbox"].serving and probes["trainer"].serving
        assert 'k2rl_service_serving{service="sandbox"} 1.0' in cluster.scrape_metrics("sandbox")
    finally:
        codes = cluster.stop()
    assert codes["judge"] == -signal.SIGKILL
    assert codes["sandbox"] == 0 and codes["trainer"] == 0


def test_up_stops_every_child_on_ctrl_c(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [*K2RL, "up", "--free-ports", "--services", "judge,sandbox", "--log-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert _wait_for_line(process, "press Ctrl-C", timeout_s=120)
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, output
    assert "stopped 2 services cleanly" in output


def test_up_reports_a_service_that_cannot_start(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        config = tmp_path / "k2rl.yaml"
        config.write_text(f"judge:\n  port: {squatter.getsockname()[1]}\n")
        result = subprocess.run(
            [*K2RL, "up", "--check", "--services", "judge", "--config", str(config),
             "--log-dir", str(tmp_path), "--timeout", "60"],
            capture_output=True, text=True, timeout=120,
        )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "judge exited" in output and "cannot bind" in output


def test_bad_config_is_reported_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("judge:\n  max_message_bytes: -1\n")
    for command in (["up", "--check", "--services", "judge"], ["serve", "judge"]):
        result = subprocess.run([*K2RL, *command, "--config", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 2
        assert "max_message_bytes" in result.stderr and "Traceback" not in result.stderr


def _wait_for_line(process: subprocess.Popen[str], text: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line and process.poll() is not None:
            return False
        if text in line:
            return True
    return False


@pytest.mark.parametrize("service", ["trainr", ""])
def test_serve_rejects_unknown_service(service: str) -> None:
    result = subprocess.run([*K2RL, "serve", service], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "unknown service" in result.stderr


def test_status_and_health_commands_see_a_configured_deployment(tmp_path: Path) -> None:
    config = tmp_path / "k2rl.yaml"
    ports = iter(free_loopback_ports(2 * len(SERVICE_NAMES)))
    sections = {name: {"port": next(ports), "metrics_port": next(ports)} for name in SERVICE_NAMES}
    sections["inference"]["http_port"] = -1  # a key only the inference settings know
    config.write_text(yaml.safe_dump({"auth_token": "tok", **sections}))
    cluster = LocalCluster(SERVICE_NAMES, config, log_dir=tmp_path / "logs")
    cluster.start()
    try:
        cluster.wait_until_serving(120)
        status = subprocess.run([*K2RL, "status", "--config", str(config), "--timeout", "10"], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert status.returncode == 0, status.stderr
        assert status.stderr.count("SERVING") == len(SERVICE_NAMES)
        healthy = subprocess.run([*K2RL, "health", cluster.launched["judge"].address],
                                 capture_output=True, text=True, timeout=60)
        assert healthy.returncode == 0 and healthy.stdout.strip() == "SERVING"
        os.kill(cluster.launched["sandbox"].process.pid, signal.SIGKILL)
        cluster.launched["sandbox"].process.wait(timeout=10)
        status = subprocess.run([*K2RL, "status", "--config", str(config), "--timeout", "10"], capture_output=True, text=True,
                                timeout=60, env={**os.environ, "COLUMNS": "200"})
        assert status.returncode == 1 and "UNREACHABLE" in status.stderr
        dead = subprocess.run([*K2RL, "health", cluster.launched["sandbox"].address],
                              capture_output=True, text=True, timeout=60)
        assert dead.returncode == 1 and "UNREACHABLE" in dead.stdout
    finally:
        cluster.stop()


def test_up_accepts_service_specific_config_keys(tmp_path: Path) -> None:
    config = tmp_path / "k2rl.yaml"
    config.write_text("inference:\n  http_port: -1\n")  # a key only the inference settings know
    cluster = LocalCluster(("inference",), config, free_ports=True, log_dir=tmp_path)
    assert cluster.settings["inference"].http_port == -1


def test_in_process_cluster_serves_the_services_from_this_process(tmp_path: Path) -> None:
    config = tmp_path / "k2rl.yaml"
    config.write_text(yaml.safe_dump({"state_url": f"sqlite:///{tmp_path}/state.db"}))
    cluster = LocalCluster(("controller", "sandbox", "judge"), config, free_ports=True, log_dir=tmp_path,
                           in_process=True)
    cluster.start()
    try:
        cluster.wait_until_serving(60)
        assert all(s.process is None and s.runtime is not None for s in cluster.launched.values())
        judge = cluster.launched["judge"].runtime
        assert judge.settings.dependencies["sandbox"] == cluster.settings["sandbox"].address
        report = round_trip(cluster)  # the controller probes the others over loopback gRPC
        assert report.ok, report.failures
        assert "sees 3/3 dependencies serving" in report.details["controller"]
    finally:
        codes = cluster.stop()
    assert codes == {"controller": 0, "sandbox": 0, "judge": 0}
    assert all(p.status == "UNREACHABLE" for p in cluster.probe_all())


def test_in_process_cluster_refuses_an_environment_for_children(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="extra_env"):
        LocalCluster(("judge",), free_ports=True, log_dir=tmp_path, extra_env={"K2RL_STATE_DIR": "x"},
                     in_process=True)
