"""`evorec reward list|show|validate|tune|simulate`: reward specs, their validity and their alignment."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from recsys.data.prepared import PreparedDataset
    from reward_lib.alignment import AlignmentData
    from reward_lib.logs import LogFile

reward_app = typer.Typer(help="Reward specs: show, validate and align them with the north-star, tune them.",
                         no_args_is_help=True)  # fmt: skip
console = Console()

Store = Annotated[Path, typer.Option("--store", help="Folder of versioned reward specs (tune writes here).")]
DataDir = Annotated[Path | None, typer.Option("--data-dir", help="Cache of prepared data.")]
Logs = Annotated[
    list[Path] | None,
    typer.Option("--log", help="A simulated A/B log: an experiment run folder or its events.parquet (repeatable)."),
]
Dataset = Annotated[
    str | None,
    typer.Option(help="Dataset of the logs (item genres, training interactions); default: the logs' plan's."),
]
SplitDay = Annotated[
    int | None, typer.Option(help="First day of the 'future' in each log (default: half its experiment days).")
]
STORE = Path("runs") / "rewards"


def _dataset(name: str | None, logs: list[LogFile], data_dir: Path | None) -> PreparedDataset:
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings

    chosen = name or next((log.dataset for log in logs if log.dataset), None) or "ml-latest-small"
    return prepared_dataset(chosen, get_settings(data_dir))


def _read_logs(paths: list[Path], prepared: PreparedDataset, split_day: int | None) -> list[AlignmentData]:
    from reward_lib.logs import LogFile

    return [LogFile.find(path).read(prepared.items, split_day) for path in paths]


@reward_app.command("list")
def list_rewards(store: Store = STORE) -> None:
    """The rewards shipped, stored and registered in Python, with their versions."""
    from reward_lib.rewards import REGISTRY
    from reward_lib.store import RewardStore

    rewards = RewardStore(store)
    table = Table(title=f"rewards (store: {store})")
    for column in ("name", "versions", "latest", "description"):
        table.add_column(column)
    for name in rewards.names():
        versions = sorted(set(rewards.versions(name)) | {v for n, v in REGISTRY if n == name})
        latest = rewards.load(name)
        table.add_row(name, ", ".join(map(str, versions)), latest.source, latest.description)
    console.print(table)


@reward_app.command("show")
def show(
    reward: Annotated[str, typer.Argument(help="name, name@version or a YAML file.")],
    store: Store = STORE,
) -> None:
    """A reward's spec, the columns it needs, each component's range and the output range."""
    from reward_lib.rewards import component_range
    from reward_lib.signals import SIGNALS
    from reward_lib.store import RewardStore, resolve_reward

    found = resolve_reward(reward, RewardStore(store))
    console.print(f"[bold]{found.key}[/] ({found.source}): {found.description}")
    if found.spec is not None:
        console.print(found.spec.to_yaml(), markup=False, highlight=False, soft_wrap=True)
        table = Table(title="components")
        for column in ("component", "signal", "reads", "weight", "tuning range", "values (unweighted)"):
            table.add_column(column)
        for c in found.spec.components:
            low, high = component_range(c)
            span = f"[{c.range[0]:g}, {c.range[1]:g}]" if c.range else "fixed"
            table.add_row(c.label, c.signal, ", ".join(SIGNALS[c.signal].columns), f"{c.weight:g}", span,
                          f"[{low:g}, {high:g}]")  # fmt: skip
        console.print(table)
    bounds = f"[{found.bounds[0]:g}, {found.bounds[1]:g}]" if found.bounds else "undeclared"
    console.print(f"needs columns: {', '.join(sorted(found.columns)) or 'none'}; output range: {bounds}")
    if found.monotone:
        console.print("monotone: " + ", ".join(f"{d} in {c}" for c, d in found.monotone.items()))


@reward_app.command("validate")
def validate(
    rewards: Annotated[list[str], typer.Argument(help="Rewards: name, name@version or YAML files.")],
    log: Logs = None,
    dataset: Dataset = None,
    split_day: SplitDay = None,
    store: Store = STORE,
    as_json: Annotated[bool, typer.Option("--json", help="Print the validation and alignment as JSON.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Check each reward on the dataset's training events and on the logs, then report how well it
    predicts the north-star on the logs (per-user correlation with later retention and satisfaction,
    agreement on the winning arm). Exits 2 when a reward is invalid.

    Example: evorec reward validate clicks engagement --log runs/experiments/exp-1
    """
    import json

    from recsys.event_table import from_interactions
    from reward_lib.alignment import measure
    from reward_lib.errors import RewardError
    from reward_lib.logs import LogFile
    from reward_lib.store import RewardStore, resolve_reward
    from reward_lib.validate import validate as check

    found = [resolve_reward(reference, RewardStore(store)) for reference in rewards]
    log_files = [LogFile.find(path) for path in log or []]
    prepared = _dataset(dataset, log_files, data_dir)
    logs = _read_logs(log or [], prepared, split_day)
    tables = [(f"training events of {prepared.name}", from_interactions(prepared.interactions, prepared.items))]
    tables += [(f"log {data.name}", data.events) for data in logs]
    reports = [check(reward, events, name) for reward in found for name, events in tables]
    valid = {report.reward for report in reports} - {report.reward for report in reports if not report.ok}
    alignments = {reward.key: measure(reward, logs) for reward in found if logs and reward.key in valid}
    if as_json:
        payload: dict[str, Any] = {
            "validation": [{"reward": r.reward, "table": r.table, "ok": r.ok,
                            "issues": [issue.__dict__ for issue in r.issues]} for r in reports],
            "alignment": {key: alignment.to_json() for key, alignment in alignments.items()},
        }  # fmt: skip
        print(json.dumps(payload, indent=2, default=float))
    else:
        for report in reports:
            console.print(report.to_text(), markup=False, highlight=False, soft_wrap=True)
        if alignments:
            console.print(_alignment_table(alignments))
    invalid = sorted({report.reward for report in reports if not report.ok})
    if invalid:
        raise RewardError(f"invalid reward(s): {', '.join(invalid)} (the issues are listed above)")


def _alignment_table(alignments: dict[str, Any]) -> Table:
    table = Table(title="alignment with the north-star (Spearman over users; arm agreement over arm pairs)")
    for column in ("reward", "alignment", "retention", "satisfaction", "arm agreement", "winner: reward / retention"):
        table.add_column(column)
    for key, alignment in alignments.items():
        winners = "; ".join(f"{log.reward_winner} / {log.north_star_winner}" for log in alignment.logs)
        table.add_row(key, f"{alignment.score:.4f}", f"{alignment.retention:.4f}", f"{alignment.satisfaction:.4f}",
                      f"{alignment.arm_agreement:.2f}", winners)  # fmt: skip
    return table


@reward_app.command("tune")
def tune(
    reward: Annotated[str, typer.Argument(help="The spec to start from: name, name@version or a YAML file.")],
    log: Logs = None,
    holdout: Annotated[
        list[Path] | None, typer.Option(help="Held-out logs: never searched on, measured before and after.")
    ] = None,
    trials: Annotated[int, typer.Option(min=1, help="Weight sets to try (the current one first).")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = 0,
    timeout: Annotated[float | None, typer.Option(help="Stop searching after this many seconds.")] = None,
    dataset: Dataset = None,
    split_day: SplitDay = None,
    store: Store = STORE,
    data_dir: DataDir = None,
) -> None:
    """Search the spec's weights (Optuna TPE) for the best alignment under its guardrails; write the
    result as a new version in --store with a report (JSON, Markdown, HTML). Nothing is overwritten.

    Example: evorec reward tune clicks --log runs/rewards/logs/seed1 --holdout runs/rewards/logs/seed2
    """
    from dataclasses import replace

    from recsys.event_table import from_interactions
    from reward_lib.errors import RewardError
    from reward_lib.logs import LogFile
    from reward_lib.report import write_tune_report
    from reward_lib.store import RewardStore, resolve_reward
    from reward_lib.tune import tune as search

    if not log:
        raise RewardError("tuning needs at least one --log (simulate one with `evorec reward simulate`)")
    rewards = RewardStore(store)
    start = resolve_reward(reward, rewards)
    if start.spec is None:
        raise RewardError(f"{start.key} is a Python reward ({start.source}); only YAML specs can be tuned")
    prepared = _dataset(dataset, [LogFile.find(path) for path in log], data_dir)
    probe = (f"training events of {prepared.name}", from_interactions(prepared.interactions, prepared.items))
    result = search(
        start.spec, _read_logs(log, prepared, split_day), trials, seed, _read_logs(holdout or [], prepared, split_day),
        [probe], timeout, start.source,
    )  # fmt: skip
    measured = result.holdout_after or result.alignment_after
    header = (f"Tuned from {start.key} ({start.source}) by `evorec reward tune` on {', '.join(map(str, log))}.\n"
              f"Alignment {(result.holdout_before or result.alignment_before).score:.4f} -> {measured.score:.4f}"
              f" ({'held-out' if result.holdout_after else 'tuning'} logs).")  # fmt: skip
    saved, path = rewards.save_new_version(result.after, header)
    result = replace(result, after=saved)
    paths = write_tune_report(result, path)
    console.print(_alignment_table({f"{start.key} (before)": result.alignment_before,
                                    f"{saved.key} (after)": result.alignment_after}))  # fmt: skip
    if result.holdout_before is not None and result.holdout_after is not None:
        console.print("held-out logs:")
        console.print(_alignment_table({f"{start.key} (before)": result.holdout_before,
                                        f"{saved.key} (after)": result.holdout_after}))  # fmt: skip
    console.print(f"new spec: {path} ({start.key} is unchanged)\nreport: {paths['html']}", soft_wrap=True)


@reward_app.command("simulate")
def simulate(
    out: Annotated[Path, typer.Option(help="Folder for the log (plan.json, events.parquet).")],
    dataset: Annotated[str, typer.Option(help="Dataset the simulated users are drawn from.")] = "ml-latest-small",
    arms: Annotated[str, typer.Option(help="Comma-separated reference policies: random, popularity, oracle.")] = (
        "popularity,random,oracle"
    ),
    users: Annotated[int, typer.Option(min=100, help="Simulated users.")] = 3000,
    days: Annotated[int, typer.Option(min=2, help="Days of the experiment.")] = 14,
    seed: Annotated[int, typer.Option(help="Seeds the users, their choices and the assignment.")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Simulate an A/B log whose arms are reference policies (no trained model needed), for
    `reward validate` and `reward tune`; the first arm is the control."""
    from pydantic import ValidationError

    from ab_testing.experiment import ArmPlan, ExperimentPlan
    from ab_testing.reference_logs import simulate_reference_log
    from recsys.data.lookup import prepared_dataset
    from recsys.settings import get_settings
    from reward_lib.errors import RewardError
    from reward_lib.logs import LogFile

    try:
        plan = ExperimentPlan(
            name=out.name, dataset=dataset, arms=tuple(ArmPlan(name=a.strip()) for a in arms.split(",")),
            users=users, days=days, pre_period_days=0, seed=seed,
        )  # fmt: skip
    except ValidationError as exc:
        raise RewardError(f"invalid simulation settings:\n{exc}") from exc
    written = LogFile.find(simulate_reference_log(plan, prepared_dataset(dataset, get_settings(data_dir)), out))
    console.print(f"log: {written.path} ({users:,} users, {days} days, arms {arms})", soft_wrap=True)
