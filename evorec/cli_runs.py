"""`evorec runs list`: every indexed run (evolution runs and experiments, from the CLI or a pipeline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

runs_app = typer.Typer(help="The runs evorec recorded: evolution runs and A/B experiments.", no_args_is_help=True)
console = Console()


@runs_app.command("list")
def list_runs(
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind: evolution or experiment.")] = None,
    registry: Annotated[str | None, typer.Option(help="Registry URL (default: $EVOREC_REGISTRY_URL).")] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Cache of data (and the default registry).")
    ] = None,
) -> None:
    """Runs, newest first: name, kind, the pipeline run they belong to, and their report page."""
    from recsys.settings import get_settings
    from serving.registry import RUN_KINDS, Registry, default_registry_url

    if kind is not None and kind not in RUN_KINDS:
        raise typer.BadParameter(f"{kind!r}: use {' or '.join(RUN_KINDS)}", param_hint="--kind")
    with Registry(registry or default_registry_url(get_settings(data_dir))) as store:
        runs = store.runs(kind)
    if not runs:
        console.print("no run yet: `evorec run` (the main job), `evorec evolve` or `evorec experiment run`")
        return
    table = Table(title="runs, newest first")
    for column in ("name", "kind", "pipeline run", "started", "report"):
        table.add_column(column, overflow="fold")
    for run in runs:
        report = str(run.report) if run.report else str(run.folder)
        table.add_row(run.name, run.kind, run.pipeline or "—", run.created_at.strftime("%Y-%m-%d %H:%M UTC"), report)
    console.print(table)
