"""``k2rl synth <config.yaml>``: run (or resume) an agentic data synthesis run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from k2rl.synth.config import load_config
from k2rl.synth.pipeline import RunSummary, run_pipeline

# Options may follow the config path (``k2rl synth cfg.yaml --quiet``): a group stops parsing its
# own options at the first positional unless interspersed arguments are allowed.
app = typer.Typer(add_completion=False, context_settings={"allow_interspersed_args": True}, help="Agentic data synthesis (K2 report 3.1.1): tools -> agents and "
                                             "rubric tasks -> judged trajectories -> SFT data.")
console = Console(stderr=True)


def _summary_table(summary: RunSummary) -> Table:
    table = Table(title="synthesis run")
    for column in ("domain", "judged", "passed", "pass rate"):
        table.add_column(column)
    for domain, row in summary.pass_rates.items():
        table.add_row(domain, str(int(row["judged"])), str(int(row["passed"])), f"{row['pass_rate']:.0%}")
    return table


@app.callback(invoke_without_command=True)
def synth(
    config: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="synthesis YAML (see configs/synth-demo.yaml)")],
    out_dir: Annotated[Path | None, typer.Option(help="override out_dir")] = None,
    run_id: Annotated[str | None, typer.Option(help="override run_id (the resume key)")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bars")] = False,
) -> None:
    """Run the pipeline; rerun the same config to resume a killed run without redoing finished items."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = {key: value for key, value in {"out_dir": out_dir, "run_id": run_id}.items() if value is not None}
    try:
        settings = load_config(config, overrides)
    except ValueError as error:
        console.print(f"[red]configuration error:[/] {error}")
        raise typer.Exit(2) from None
    try:
        summary = run_pipeline(settings, show_progress=not quiet)
    except ValueError as error:  # bad tool files, no tools left after filtering, ...
        console.print(f"[red]synthesis error:[/] {error}")
        raise typer.Exit(2) from None
    console.print(_summary_table(summary))
    print(json.dumps({key: summary.to_dict()[key] for key in
                      ("tools", "agents", "tasks", "tasks_done", "tasks_failed", "trajectories", "kept", "outputs")}))
    raise typer.Exit(1 if summary.tasks_failed else 0)
