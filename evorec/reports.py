"""Terminal renderings of evorec objects (rich tables), shared by CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Group
from rich.table import Table

from recsys.data.prepared import PreparedDataset

if TYPE_CHECKING:
    from offline_agent.diagnosis.report import DiagnosisReport
    from recsys.trainer import TrainResult

SEVERITY_STYLE = {"severe": "bold red", "mild": "yellow", "none": "green"}


def prepared_summary_table(path: Path) -> Group:
    """Counts, row accounting, split sizes and the most-interacted items of a prepared dataset."""
    prepared = PreparedDataset.open(path)
    m = prepared.manifest
    rows = m["rows"]
    dead = rows["dead_lettered"]
    filtered = rows["filtered"]
    overview = Table(title=f"{m['dataset']} — prepared in {path}", show_header=False)
    overview.add_column("what")
    overview.add_column("value", justify="right")
    for label, value in (
        ("users", m["users"]),
        ("items", m["items"]),
        ("interactions", m["interactions"]),
        ("rows read", rows["read"]),
        ("dead-lettered (parse / schema / duplicate)", f"{dead['parse']} / {dead['schema']} / {dead['duplicate']}"),
        ("filtered (item k-core / user k-core)", f"{filtered['item_kcore']} / {filtered['user_kcore']}"),
        (f"split ({m['split']['method']}) train / valid / test",
         f"{m['split']['train']} / {m['split']['valid']} / {m['split']['test']}"),
    ):  # fmt: skip
        overview.add_row(label, f"{value:,}" if isinstance(value, int) else str(value))
    per_user = prepared.users["interactions"]
    overview.add_row("interactions per user (min / median / max)",
                     f"{per_user.min()} / {int(per_user.median())} / {per_user.max()}")  # fmt: skip
    top = Table(title="most-interacted items")
    for column in ("item_idx", "title", "year", "genres", "interactions"):
        top.add_column(column)
    for item in prepared.items.nlargest(5, "interactions").itertuples():
        top.add_row(
            str(item.item_idx),
            str(item.title),
            str(item.year),
            ", ".join(item.genres),
            str(item.interactions),
        )
    return Group(overview, top)


def metrics_table(result: TrainResult) -> Table:
    """Validation (best epoch) and test metrics side by side."""
    table = Table(
        title=f"{result.candidate} on {result.dataset}: best epoch {result.best_epoch} of {result.epochs} "
        f"({result.stopped}, {result.seconds:.0f} s)"
    )
    for column in ("metric", "valid", "test"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    for name in sorted(result.test):
        table.add_row(name, f"{result.valid.get(name, float('nan')):.4f}", f"{result.test[name]:.4f}")
    return table


def diagnosis_table(report: DiagnosisReport) -> Table:
    """The diagnosis findings, most severe first, coloured by severity."""
    table = Table(title=f"diagnosis ({report.seconds:.1f} s)")
    for column in ("probe", "severity", "signal", "finding"):
        table.add_column(column, justify="right" if column == "signal" else "left")
    for finding in sorted(report.findings, key=lambda f: -f.signal):
        style = SEVERITY_STYLE.get(finding.severity, "")
        table.add_row(finding.probe, f"[{style}]{finding.severity}[/]", f"{finding.signal:.2f}", finding.interpretation)
    return table
