"""The main job with multi-fidelity selection (the embedded default: rungs of 3 and 8 epochs, the best of
the top rung trained on from its checkpoint) against the same job with one 8-epoch budget for every
candidate (the default before rungs), run one after the other on the same machine: wall time, and
the validation and test NDCG@10 of the model each queues for the A/B experiment.

    python benchmarks/main_job_rungs.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import write_result
from benchmarks.main_job import pipeline_run
from offline_agent.program_db import DatabaseConfig, ProgramDatabase
from serving.registry import Registry

SINGLE_BUDGET = {  # the embedded evolution before rungs
    "seed_candidate": "offline_agent/seeds/sasrec_bce", "iterations": 4, "workers": 2,
    "evaluation": {"smoke_users": 100, "smoke_seconds": 20, "max_epochs": 8, "train_seconds": 150,
                   "overhead_seconds": 120},
}  # fmt: skip


def _queued(folder: Path, version: int) -> dict[str, float]:
    """The queued version's validation and test NDCG@10, as the registry holds them."""
    with Registry(f"sqlite:///{folder / 'registry.db'}") as registry:
        metrics = registry.get(version).metrics
    return {"valid_ndcg10": metrics["valid"]["ndcg@10"], "test_ndcg10": metrics["test"]["ndcg@10"]}


def _run(folder: Path, config: Path | None) -> dict[str, Any]:
    result = pipeline_run(folder, config)
    states = [ProgramDatabase(DatabaseConfig(url=f"sqlite:///{path}")) for path in folder.rglob("evolution.db")]
    ended = [db for db in states if db.get_state("selection_ended")]  # the last generation's state, under rungs
    results = ended[0].rung_results() if ended else []
    return {
        "seconds": result["seconds"],
        "stages": {name: round(times["seconds"], 1) for name, times in result["tasks"].items()},
        "queued": _queued(folder, result["version"]) if result["version"] else None,
        "rungs": [
            {"rung": rung, "candidates": len(at), "best_valid_ndcg10": max((r.fitness or 0.0) for r in at)}
            for rung in sorted({r.rung for r in results})
            for at in [[r for r in results if r.rung == rung]]
        ],
        "proxy_fidelity": ended[0].get_state("proxy_fidelity") if ended else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="main-job-rungs-") as rungs_dir, tempfile.TemporaryDirectory() as single:
        config = Path(single) / "single_budget.yaml"
        config.write_text(yaml.safe_dump({"pipeline": {"evolution": SINGLE_BUDGET}}))
        baseline = _run(Path(single), config)
        with_rungs = _run(Path(rungs_dir), None)
    figures = {
        "rungs": with_rungs,
        "single_budget": baseline,
        "seconds_ratio_rungs_vs_single_budget": round(with_rungs["seconds"] / baseline["seconds"], 3),
        "note": "both runs from an empty registry (the seed is trained too); make run must stay under 15 minutes",
    }
    path = write_result("main_job_rungs", figures, "ml-latest-small (shipped), embedded default pipeline config")
    print(json.dumps(figures, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
