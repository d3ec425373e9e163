"""`evorec pipeline compile|run|submit` and the main job's display: the Kubeflow pipelines of both loops."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TimeElapsedColumn
from rich.table import Table

from pipelines import PIPELINE_NAMES

if TYPE_CHECKING:
    from collections.abc import Callable

    from pipelines.config import PipelineConfig
    from pipelines.runner import LocalRun

console = Console()
pipeline_app = typer.Typer(help="Compile, run here, or submit the Kubeflow pipelines of both loops.")
ROOT = Path("runs") / "pipelines"

Name = Annotated[str, typer.Argument(help=f"The pipeline: {', '.join(PIPELINE_NAMES)}.")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", "-c", help="Pipeline YAML (section pipeline); default: the embedded one.")
]


def load_config(path: Path | None) -> PipelineConfig:
    from pipelines.config import PipelineConfig, load_pipeline_config

    return load_pipeline_config(path) if path is not None else PipelineConfig()


def _check(name: str) -> None:
    if name not in PIPELINE_NAMES:
        raise typer.BadParameter(f"unknown pipeline {name!r}; choose one of {', '.join(PIPELINE_NAMES)}")


@contextmanager
def task_progress() -> Iterator[Callable[[str, str], None]]:
    """A spinner naming the running tasks, and a line per finished task with its time."""
    running: dict[str, list[float]] = defaultdict(list)  # tasks of a ParallelFor share a name
    terminal = Console(file=sys.stdout)  # bound now: during the run, sys.stdout is the pipeline's log
    with Progress(
        SpinnerColumn(), "[progress.description]{task.description}", TimeElapsedColumn(), console=terminal
    ) as progress:
        bar = progress.add_task("starting", total=None)

        def on_task(task: str, event: str) -> None:
            if event == "started":
                running[task].append(time.monotonic())
            else:
                seconds = time.monotonic() - (running[task].pop(0) if running[task] else time.monotonic())
                mark = "[green]✓[/]" if event == "success" else f"[red]✗ {event}[/]"
                progress.console.print(f"{mark} {task} ({seconds:.0f} s)")
            now = [f"{name} ×{len(starts)}" if len(starts) > 1 else name for name, starts in running.items() if starts]
            progress.update(bar, description="running " + (", ".join(sorted(now)) or "…"))

        yield on_task


def task_table(run: LocalRun) -> Table:
    table = Table("task", "runs", "seconds", "failed", title=f"{run.name}: {run.seconds:.0f} s")
    for name, times in run.tasks.items():
        table.add_row(name, str(times.runs), f"{times.seconds:.1f}", str(times.failed))
    return table


@pipeline_app.command("compile")
def compile_(
    name: Name,
    out: Annotated[Path | None, typer.Option(help="Where to write the IR YAML (default: <name>.yaml).")] = None,
    config: ConfigFile = None,
) -> None:
    """Write a pipeline as Kubeflow Pipelines IR YAML, with the config's values as parameter defaults."""
    from pipelines.runner import compile_pipeline

    _check(name)
    path = compile_pipeline(name, load_config(config), out or Path(f"{name}.yaml"))
    console.print(f"compiled {name} → {path}")


@pipeline_app.command("run")
def run(
    name: Name,
    config: ConfigFile = None,
    root: Annotated[Path, typer.Option(help="Pipeline root: one folder per run, one per task.")] = ROOT,
) -> None:
    """Run a pipeline here with kfp.local (each task a subprocess); the full log goes to a file."""
    from pipelines.runner import run_local

    _check(name)
    with task_progress() as on_task:
        finished = run_local(name, load_config(config), root, on_task)
    console.print(task_table(finished))
    console.print(f"artifacts: {finished.folder}\nlog: {finished.log}")
    for indexed in finished.indexed:
        console.print(f"{indexed.kind} {indexed.name}: {indexed.report or indexed.folder}")


@pipeline_app.command("submit")
def submit(
    name: Name,
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API endpoint, e.g. https://kfp.example.com/pipeline.")],
    config: ConfigFile = None,
    experiment: Annotated[str, typer.Option(help="KFP experiment to file the run under.")] = "evorec",
    namespace: Annotated[str | None, typer.Option(help="Kubeflow profile namespace (multi-user clusters).")] = None,
) -> None:
    """Submit a pipeline to a Kubeflow Pipelines cluster; kfp.Client reads credentials from the environment."""
    from pipelines.runner import submit as submit_run

    _check(name)
    console.print_json(json.dumps(submit_run(name, load_config(config), host, experiment, namespace)))
