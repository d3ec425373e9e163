"""Evolution runs in the console: each run's score over iterations and candidates, each candidate's
edit (a diff against its parent), lineage, diagnosis report and simulated users' critiques.

Everything is read from the run's folder while the loop may still be writing to it: the program
database (SQLite in WAL mode lets readers work beside the writer) and each candidate's
``candidates/<key12>/diagnosis.md`` and ``critiques.md``. The summary is the run report's own
Markdown and plot (:mod:`offline_agent.report`), so the console and ``report.md`` never disagree.
"""

from __future__ import annotations

import base64
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from evorec.run_index import EVOLUTION_DATABASE, evolution_runs
from evorec.ui.diffs import block_diffs
from evorec.ui.rendering import render
from offline_agent.program_db import DatabaseConfig, Program, ProgramDatabase
from offline_agent.report import report_markdown, score_plot
from serving.registry import Registry

router = APIRouter()
DATABASE_FILE = EVOLUTION_DATABASE
STOPPED = "not recorded (live view of the program database)"
_PLOT_LOCK = threading.Lock()  # pyplot keeps global state: one figure at a time


class RunStore:
    """The evolution runs of the registry's run index and under ``root`` (its sub-folders holding
    ``evolution.db``), each database opened once."""

    def __init__(self, registry: Registry, root: Path, fitness: str) -> None:
        self.registry = registry
        self.root = root
        self.fitness = fitness
        self._open: dict[Path, ProgramDatabase] = {}
        self._lock = threading.Lock()

    def folders(self) -> dict[str, Path]:
        """Run name -> folder, newest first."""
        return evolution_runs(self.registry, self.root)

    def names(self) -> list[str]:
        return list(self.folders())

    def folder(self, name: str) -> Path:
        """The run's folder; 404 for a name that is not a run (never a path the index does not name)."""
        folder = self.folders().get(name)
        if folder is None:
            raise HTTPException(404, f"There is no evolution run {name!r}.")
        return folder

    def database(self, name: str) -> ProgramDatabase:
        """The run's program database."""
        folder = self.folder(name).resolve()
        with self._lock:
            if folder not in self._open:
                url = f"sqlite:///{folder / DATABASE_FILE}"
                self._open[folder] = ProgramDatabase(DatabaseConfig(url=url, fitness=self.fitness))
            return self._open[folder]

    def feedback_file(self, name: str, program: Program, file: str) -> str | None:
        """A file the loop wrote beside the database for ``program`` (``candidates/<key12>/diagnosis.md``...)."""
        path = self.folder(name) / "candidates" / program.key[:12] / file
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def close(self) -> None:
        with self._lock:
            for database in self._open.values():
                database.engine.dispose()
            self._open.clear()


@dataclass(frozen=True)
class RunSummary:
    name: str
    iterations: int
    counts: dict[str, int]
    best: Program | None


@dataclass(frozen=True)
class CandidateRow:
    """A candidate in the run's table: its change in fitness over its parent, and whether the best descends from it."""

    program: Program
    delta: float | None
    in_best_lineage: bool


def _store(request: Request) -> RunStore:
    store: RunStore = request.app.state.runs
    return store


def summaries(store: RunStore) -> list[RunSummary]:
    out = []
    for name in store.names():
        database = store.database(name)
        out.append(RunSummary(name, int(database.get_state("iteration", 0)), database.counts(), database.best()))
    return out


def _rows(database: ProgramDatabase) -> list[CandidateRow]:
    programs = database.programs()
    by_key = {program.key: program for program in programs}
    best = database.best()
    lineage = {program.key for program in database.lineage(best.key)} if best else set()
    rows = []
    for program in programs:
        parent = by_key.get(program.parent_key or "")
        delta = None
        if parent is not None and program.fitness is not None and parent.fitness is not None:
            delta = program.fitness - parent.fitness
        rows.append(CandidateRow(program, delta, program.key in lineage))
    return rows


def _report_body(database: ProgramDatabase, fitness: str) -> str:
    """The run report's Markdown without its title (the page has its own)."""
    markdown = report_markdown(database, fitness, STOPPED)
    return markdown.split("\n", 1)[1] if markdown.startswith("# ") else markdown


@router.get("/runs", response_class=HTMLResponse)
def runs_page(request: Request) -> Response:
    store = _store(request)
    return render(request, "runs.html", {"runs": summaries(store), "root": store.root, "fitness": store.fitness})


@router.get("/runs/{run}", response_class=HTMLResponse)
def run_page(request: Request, run: str) -> Response:
    store = _store(request)
    database = store.database(run)
    context = {
        "run": run,
        "fitness": store.fitness,
        "report": _report_body(database, store.fitness),
        "rows": _rows(database),
    }
    return render(request, "run.html", context)


@router.get("/runs/{run}/score.png")
def score_image(request: Request, run: str) -> Response:
    store = _store(request)
    database = store.database(run)
    with _PLOT_LOCK:
        image = score_plot(database, store.fitness)
    return Response(base64.b64decode(image), media_type="image/png", headers={"Cache-Control": "no-store"})


@router.get("/runs/{run}/candidates/{key}", response_class=HTMLResponse)
def candidate_page(request: Request, run: str, key: str) -> Response:
    store = _store(request)
    database = store.database(run)
    try:
        program = database.get(key)
        lineage = list(database.lineage(key))
    except KeyError as exc:
        raise HTTPException(404, f"Run {run!r} holds no candidate {key!r}.") from exc
    parent = lineage[1] if len(lineage) > 1 else None
    edited = parent is not None and program.origin == "proposed"
    context: dict[str, Any] = {
        "run": run,
        "fitness": store.fitness,
        "program": program,
        "parent": parent,
        "lineage": lineage,
        "diffs": block_diffs(parent.blocks, program.blocks) if parent is not None and edited else [],
        "edited": edited,
        "diagnosis": store.feedback_file(run, program, "diagnosis.md"),
        "critiques": store.feedback_file(run, program, "critiques.md"),
    }
    return render(request, "candidate.html", context)
