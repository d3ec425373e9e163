"""Where the console and the CLI find runs: the registry's run index, then a folder's sub-folders.

Every run evorec starts (`evorec run`, `evorec pipeline run`, `evorec evolve`, `evorec experiment
run|queue`) is indexed in the registry under a human name; runs copied in from elsewhere are still
found in the default folders (``runs/`` for evolution runs, ``runs/experiments/`` for experiments).
"""

from __future__ import annotations

from pathlib import Path

from serving.registry import Registry

EVOLUTION_DATABASE = "evolution.db"
EXPERIMENT_PLAN = "plan.json"


def evolution_runs(registry: Registry, root: Path) -> dict[str, Path]:
    """Run name -> folder holding ``evolution.db``, newest first."""
    return _runs(registry, "evolution", root, EVOLUTION_DATABASE)


def experiment_runs(registry: Registry, root: Path) -> dict[str, Path]:
    """Experiment name -> folder holding ``plan.json`` (and its reports once analysed), newest first."""
    return _runs(registry, "experiment", root, EXPERIMENT_PLAN)


def _runs(registry: Registry, kind: str, root: Path, marker: str) -> dict[str, Path]:
    found = {run.name: run.folder for run in registry.runs(kind) if (run.folder / marker).is_file()}
    indexed = {folder.resolve() for folder in found.values()}
    scanned = sorted(root.glob(f"*/{marker}"), key=lambda path: -path.stat().st_mtime) if root.is_dir() else []
    for path in scanned:
        folder = path.parent
        if folder.resolve() not in indexed:
            names = (folder.name, *(f"{folder.name}-{n}" for n in range(2, len(found) + 3)))
            found[next(name for name in names if name not in found)] = folder
    return found
