"""`evorec experiment run|list|report`: simulated A/B experiments of registry model versions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from recsys.errors import EvorecError

experiment_app = typer.Typer(help="Run simulated A/B experiments and read their reports.", no_args_is_help=True)
console = Console()
RUNS = Path("runs") / "experiments"

Runs = Annotated[Path, typer.Option("--runs", help="Folder holding one sub-folder per experiment run.")]


@experiment_app.command("run")
def run(
    config: Annotated[Path, typer.Option("--config", "-c", help="Experiment plan YAML (section experiment).")],
    registry: Annotated[str | None, typer.Option(help="Registry URL (default: $EVOREC_REGISTRY_URL).")] = None,
    runs: Runs = RUNS,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Cache of prepared data.")] = None,
    server_url: Annotated[
        str | None,
        typer.Option(
            "--server-url",
            help="Serve the arms from this recommendation server over HTTP (its experiment must be the plan's: "
            "salt, arms and weights); default: the plan's server_url, else in process.",
        ),
    ] = None,
) -> None:
    """Run a pre-registered plan: each arm is a registry version (none: the production model)."""
    from pydantic import ValidationError

    from ab_testing.analysis import analyse
    from ab_testing.experiment import ExperimentPlan, run_experiment
    from ab_testing.report import write_report
    from recsys.config_files import load_yaml_model
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from serving.artifacts import load_artifact
    from serving.registry import Registry, default_registry_url

    plan = load_yaml_model(config, ExperimentPlan, "experiment plan", section="experiment")
    if server_url is not None:
        try:
            plan = ExperimentPlan.model_validate({**plan.model_dump(), "server_url": server_url})
        except ValidationError as exc:
            raise EvorecError(f"--server-url: {exc.errors()[0]['msg']}") from exc
    settings = get_settings(data_dir)
    with Registry(registry or default_registry_url(settings)) as store:
        versions = {}
        for arm in plan.arms:
            version = store.get(arm.version) if arm.version is not None else store.production()
            if version is None:
                raise EvorecError(f"arm {arm.name} names no version and no model is in production")
            versions[arm.name] = version
    # over HTTP the server scores the arms; only the control serves the pre-period here
    local = plan.arms if plan.server_url is None else plan.arms[:1]
    models = {arm.name: load_artifact(versions[arm.name].artifact_uri) for arm in local}
    where = f"arms served by {plan.server_url}" if plan.server_url else "arms served in process"
    console.print(f"running {plan.name}: {plan.users:,} users, {plan.days} days, {where}")
    ids = {name: version.id for name, version in versions.items()}
    experiment = run_experiment(plan, prepared_dataset(plan.dataset, settings), models, runs / plan.name, versions=ids)
    for analysis in analyse(experiment):
        paths = write_report(experiment, analysis)
        with Registry(registry or default_registry_url(settings)) as store:
            store.record_run("experiment", experiment.folder, report=paths["html"])
        verdict = "[green]ship (awaiting approval)[/]" if analysis.ship else "[red]do not ship[/]"
        console.print(f"{analysis.treatment}: {verdict}: {analysis.reasons()[0]}")
        console.print(f"report: {paths['html']}")


@experiment_app.command("list")
def list_runs(
    runs: Runs = RUNS,
    registry: Annotated[str | None, typer.Option(help="Registry URL (default: $EVOREC_REGISTRY_URL).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Cache of prepared data.")] = None,
) -> None:
    """The experiments of the registry's run index and in --runs, with their verdicts and reports."""
    import json

    from evorec.run_index import experiment_runs
    from recsys.settings import get_settings
    from serving.registry import Registry, default_registry_url

    with Registry(registry or default_registry_url(get_settings(data_dir))) as store:
        found = experiment_runs(store, runs)
    table = Table(title="experiments")
    for column in ("experiment", "treatment", "verdict", "first reason", "report"):
        table.add_column(column, overflow="fold")
    for name, folder in found.items():
        for report in sorted(folder.glob("report-*.json")):
            payload = json.loads(report.read_text())
            verdict = "ship" if payload["ship"] else "do not ship"
            page = report.with_suffix(".html")
            table.add_row(name, payload["treatment"], verdict, payload["reasons"][0], str(page))
    console.print(table if table.rows else "no experiment yet: `evorec run` or `evorec experiment run -c plan.yaml`")


@experiment_app.command("report")
def report(folder: Annotated[Path, typer.Argument(help="An experiment run folder.")]) -> None:
    """Analyse a finished run again and rewrite its reports (JSON, Markdown, HTML)."""
    from ab_testing.analysis import analyse
    from ab_testing.experiment import ExperimentRun
    from ab_testing.report import write_report

    experiment = ExperimentRun.load(folder)
    for analysis in analyse(experiment):
        console.print(f"report: {write_report(experiment, analysis)['html']}")


@experiment_app.command("queue")
def queue(
    dataset: Annotated[str, typer.Option(help="Dataset the simulated users are calibrated on.")] = "ml-latest-small",
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Online agent YAML (online_agent).")] = None,
    registry: Annotated[str | None, typer.Option(help="Registry URL (default: $EVOREC_REGISTRY_URL).")] = None,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Cache of prepared data.")] = None,
) -> None:
    """The online agent: experiment on each queued version against production, then ask for approval.

    Versions the decision rule would ship wait in awaiting_approval (unless the config names an
    auto-approval policy); the others are rejected with the reasons.
    """
    from online_agent.agent import OnlineAgentConfig, process_queue
    from recsys.config_files import load_yaml_model
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from serving.registry import Registry, default_registry_url

    settings = load_yaml_model(config, OnlineAgentConfig, "online agent config", section="online_agent") if config \
        else OnlineAgentConfig()  # fmt: skip
    paths = get_settings(data_dir)
    with Registry(registry or default_registry_url(paths)) as store:
        outcomes = process_queue(settings, store, prepared_dataset(dataset, paths))
    if not outcomes:
        console.print("no version is queued")
    for outcome in outcomes:
        console.print(f"version {outcome.version}: [bold]{outcome.state}[/]: {outcome.reason}")
        if outcome.state == "awaiting_approval":
            console.print(f'approve with: evorec promote approve {outcome.version} --reason "..."')
