"""The online loop in the console: the experiment queue and each A/B report.

The queue is the registry's view (versions queued, experimenting, or awaiting a person's
approval, with the last audit reason); the reports are the files the A/B analysis wrote
(``report-<arm>.json`` and the plots of ``report-<arm>.html`` in each experiment folder), shown as
they are, never recomputed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from evorec.run_index import experiment_runs
from evorec.ui.rendering import render
from serving.registry import AuditInfo, Registry, RegistryError, VersionInfo

router = APIRouter()
QUEUE_STATES = ("awaiting_approval", "experimenting", "queued")
PLOT_PREFIX = "data:image/png;base64,"


@dataclass(frozen=True)
class ExperimentReport:
    """One treatment arm's report (``report-<arm>.json``) of the experiment in ``folder``."""

    experiment: str  # its name in the run index (or its folder's name)
    folder: Path
    arm: str
    payload: dict[str, Any]

    @property
    def url(self) -> str:
        return f"/experiments/{self.experiment}/{self.arm}"

    def versions(self) -> dict[str, int | None]:
        """Arm name -> registry version (None: the production model when the experiment ran)."""
        return {arm["name"]: arm.get("version") for arm in self.payload.get("plan", {}).get("arms", [])}

    def figures(self) -> list[tuple[str, str]]:
        """The report page's plots as (alt text, data URL): the HTML report's own images."""
        page = self.folder / f"report-{self.arm}.html"
        if not page.exists():
            return []
        parser = _Images()
        parser.feed(page.read_text(encoding="utf-8"))
        return parser.images


class _Images(HTMLParser):
    """Collects the embedded PNG plots of an HTML page (nothing else from it reaches the console)."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        source = found.get("src") or ""
        if tag == "img" and source.startswith(PLOT_PREFIX):
            self.images.append((found.get("alt") or "plot", source))


@dataclass(frozen=True)
class QueueEntry:
    version: VersionInfo
    last_move: AuditInfo | None
    reports: list[ExperimentReport]


def reports(registry: Registry, root: Path) -> list[ExperimentReport]:
    """Every report of the indexed experiments and those under ``root``, newest first."""
    out = []
    for name, folder in experiment_runs(registry, root).items():
        for path in sorted(folder.glob("report-*.json")):
            try:
                payload = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue  # being written right now; the next look shows it
            out.append(ExperimentReport(name, folder, path.stem.removeprefix("report-"), payload))
    return sorted(out, key=lambda report: -(report.folder / f"report-{report.arm}.json").stat().st_mtime)


def unreported(registry: Registry, root: Path) -> list[str]:
    """Experiments with a plan but no report yet: running, or stopped before the analysis."""
    return [name for name, folder in experiment_runs(registry, root).items() if not any(folder.glob("report-*.json"))]


def reports_of(registry: Registry, root: Path, version_id: int) -> list[ExperimentReport]:
    """The reports of experiments in which ``version_id`` was an arm."""
    return [report for report in reports(registry, root) if version_id in report.versions().values()]


def queue(registry: Registry, root: Path) -> list[QueueEntry]:
    """Versions waiting for a person first, then those in or waiting for an experiment."""
    entries = []
    everything = reports(registry, root)
    for state in QUEUE_STATES:
        for version in registry.versions(state=state):
            trail = registry.audit(version.id)
            linked = [report for report in everything if version.id in report.versions().values()]
            entries.append(QueueEntry(version, trail[-1] if trail else None, linked))
    return entries


@router.get("/experiments", response_class=HTMLResponse)
def experiments_page(request: Request) -> Response:
    root: Path = request.app.state.config.experiments_dir
    registry: Registry = request.app.state.registry
    context = {
        "queue": queue(registry, root),
        "reports": reports(registry, root),
        "unreported": unreported(registry, root),
        "root": root,
    }
    return render(request, "experiments.html", context)


@router.get("/experiments/{experiment}/{arm}", response_class=HTMLResponse)
def report_page(request: Request, experiment: str, arm: str) -> Response:
    root: Path = request.app.state.config.experiments_dir
    registry: Registry = request.app.state.registry
    found = [r for r in reports(registry, root) if (r.experiment, r.arm) == (experiment, arm)]
    if not found:
        raise HTTPException(404, f"There is no report of arm {arm!r} in experiment {experiment!r}.")
    report = found[0]
    states = {}
    for version in report.versions().values():
        if version is not None:
            try:
                states[version] = registry.get(version).state
            except RegistryError:
                continue  # a report from another registry: its versions are not here
    return render(request, "experiment.html", {"report": report, "payload": report.payload, "states": states})
