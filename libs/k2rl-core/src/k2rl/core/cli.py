"""The ``k2rl`` command: serve one service, bring all of them up, check their status."""

from __future__ import annotations

import signal
import threading
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from k2rl.core.client import ClientOptions
from k2rl.core.config import SERVICE_NAMES, load_settings
from k2rl.core.health import HealthProbe, probe_health

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="k2rl: Kimi-K2-style MoE training and RL infrastructure.")
console = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file")]


def _config_error(error: Exception) -> typer.Exit:
    """A bad config file or value is the user's to fix: say what, no traceback."""
    console.print(f"[red]configuration error:[/] {error}")
    return typer.Exit(2)


def _check_service_name(name: str) -> str:
    if name not in SERVICE_NAMES:
        raise typer.BadParameter(f"unknown service {name!r}; choose from {', '.join(SERVICE_NAMES)}")
    return name


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"one of: {', '.join(SERVICE_NAMES)}")],
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="bind address")] = None,
    port: Annotated[int | None, typer.Option(help="gRPC port")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="/metrics port")] = None,
    log_level: Annotated[str | None, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = None,
    nproc: Annotated[int | None, typer.Option(help="processes (ranks) of a multi-process service, e.g. trainer")] = None,
) -> None:
    """Run one service in the foreground until SIGTERM / Ctrl-C."""
    from k2rl.core.server import load_service
    from k2rl.core.server import serve as serve_forever

    _check_service_name(service)
    try:
        spec = load_service(service)
    except LookupError as error:
        console.print(f"[red]{error}[/] (pip install -e services/{service})")
        raise typer.Exit(2) from None
    if nproc is not None and "nproc" not in spec.settings_type.model_fields:
        raise _config_error(ValueError(f"{service} runs as one process; --nproc does not apply to it"))
    overrides = {"host": host, "port": port, "metrics_port": metrics_port, "log_level": log_level, "nproc": nproc}
    try:
        settings = load_settings(spec.settings_type, service, config, overrides)
    except (ValueError, FileNotFoundError) as error:
        raise _config_error(error) from None
    (spec.main or serve_forever)(spec, settings)


def _probe_table(title: str, probes: list[HealthProbe], extra: dict[str, str] | None = None) -> Table:
    table = Table(title=title)
    for column in ("service", "address", "health", "latency ms", "detail"):
        table.add_column(column)
    for probe in probes:
        colour = "green" if probe.serving else "red"
        detail = (extra or {}).get(probe.name, "") or probe.error
        table.add_row(probe.name, probe.address, f"[{colour}]{probe.status}[/]",
                      f"{probe.latency_ms:.1f}", detail)
    return table


@app.command()
def up(
    config: ConfigOption = None,
    services: Annotated[str | None, typer.Option(help="comma-separated subset")] = None,
    free_ports: Annotated[bool, typer.Option(help="pick free loopback ports")] = False,
    check: Annotated[bool, typer.Option(help="round-trip every service, then shut down")] = False,
    timeout: Annotated[float, typer.Option(help="seconds to wait for health")] = 90.0,
    log_dir: Annotated[Path, typer.Option(help="where each service's log goes")] = Path(".k2rl/logs"),
) -> None:
    """Start the services as separate processes on loopback; Ctrl-C stops them all."""
    from k2rl.core.launcher import LocalCluster, ServiceExited
    from k2rl.core.roundtrip import round_trip

    names = tuple(_check_service_name(n.strip()) for n in services.split(",")) if services else SERVICE_NAMES
    try:
        cluster = LocalCluster(names, config, free_ports=free_ports, log_dir=log_dir)
    except (ValueError, FileNotFoundError) as error:
        raise _config_error(error) from None
    stop_requested = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
    cluster.start()
    exit_code = 0
    try:
        with console.status(f"starting {len(names)} services (logs in {log_dir}/)"):
            cluster.wait_until_serving(timeout)
        if check:
            report = round_trip(cluster)
            console.print(_probe_table("k2rl up --check", report.probes, report.details))
            exit_code = 0 if report.ok else 1
            if not report.ok:
                console.print(f"[red]round trip failed:[/] {'; '.join(report.failures)}")
        else:
            console.print(_probe_table("k2rl services", cluster.probe_all()))
            console.print("serving; press Ctrl-C to stop")
            while not stop_requested.wait(0.5):
                exited = cluster.first_exited()
                if exited is not None:
                    console.print(f"[red]{exited.name} exited[/]:\n{exited.log_tail()}")
                    exit_code = 1
                    break
    except KeyboardInterrupt:
        pass
    except (ServiceExited, TimeoutError) as error:
        console.print(f"[red]{error}[/]")
        exit_code = 1
    finally:
        with console.status("stopping services"):
            codes = cluster.stop()
        unclean = {name: code for name, code in codes.items() if code not in (0, -signal.SIGTERM)}
        console.print(f"stopped {len(codes)} services" + (f"; unclean exits: {unclean}" if unclean else " cleanly"))
        if unclean:
            exit_code = exit_code or 1
    raise typer.Exit(exit_code)


@app.command()
def status(
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(help="per-service probe timeout")] = 2.0,
) -> None:
    """Probe every configured service's grpc health and print a table."""
    from k2rl.core.server import load_service_settings

    probes = []
    for name in SERVICE_NAMES:
        try:
            settings = load_service_settings(name, config)
        except (ValueError, FileNotFoundError) as error:
            raise _config_error(error) from None
        probes.append(probe_health(name, settings.address, ClientOptions.from_settings(settings), timeout))
    console.print(_probe_table("k2rl status", probes))
    raise typer.Exit(0 if all(p.serving for p in probes) else 1)


@app.command()
def health(
    address: Annotated[str, typer.Argument(help="host:port")],
    timeout: Annotated[float, typer.Option()] = 2.0,
) -> None:
    """Exit 0 when the service at ADDRESS is SERVING (for container health checks)."""
    probe = probe_health("service", address, ClientOptions(), timeout)
    print(probe.status if probe.serving else f"{probe.status} {probe.error}")
    raise typer.Exit(0 if probe.serving else 1)


def add_plugin_commands(root: typer.Typer) -> None:
    """Mount sub-command groups that installed packages register under ``k2rl.cli``.

    A service adds e.g. ``k2rl train ...`` with an entry point
    ``[project.entry-points."k2rl.cli"] train = "k2rl.trainer.cli:app"`` (a ``typer.Typer``),
    so the core CLI never imports service code directly.
    """
    for entry in entry_points(group="k2rl.cli"):
        sub_app = entry.load()
        if not isinstance(sub_app, typer.Typer):
            raise TypeError(f"entry point {entry.value} is not a typer.Typer")
        root.add_typer(sub_app, name=entry.name)


def main() -> None:
    add_plugin_commands(app)
    app()


if __name__ == "__main__":
    main()
