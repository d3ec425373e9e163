"""The main job that `evorec run` (and `make run`) performs.

The main job is the ``two_loop`` Kubeflow pipeline run here with kfp.local on the embedded default
(the shipped MovieLens latest-small, the rulebook proposer): prepare, evolve, train the finalists,
register, then a simulated A/B experiment of the best against production, ending with the
candidate awaiting a person's approval.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys.settings import Settings

if TYPE_CHECKING:
    from pipelines.config import PipelineConfig
    from pipelines.runner import LocalRun


@dataclass(frozen=True)
class MainJobResult:
    """What a person needs after the main job: where the run is, what became of the candidate."""

    run: LocalRun
    version: int  # the candidate queued for the experiment, 0 when none was new
    state: str  # its registry state at the end (awaiting_approval, rejected, ...)
    decision: str  # the last audit reason: the experiment's verdict
    report: Path | None

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.run.name, "folder": str(self.run.folder), "log": str(self.run.log),
            "seconds": self.run.seconds, "version": self.version, "state": self.state, "decision": self.decision,
            "report": str(self.report) if self.report else None,
            "tasks": {name: dataclasses.asdict(times) for name, times in self.run.tasks.items()},
        }  # fmt: skip


def run_main_job(
    settings: Settings,
    config: PipelineConfig | None = None,
    pipeline_root: Path = Path("runs") / "pipelines",
    on_task: Callable[[str, str], None] | None = None,
) -> MainJobResult:
    """Run the two-loop pipeline locally (``config``: the embedded default); writes ``summary.json``
    into the run's folder."""
    from pipelines.config import PipelineConfig
    from pipelines.runner import run_local
    from serving.registry import Registry, default_registry_url

    config = config or PipelineConfig()
    run = run_local("two_loop", config, pipeline_root, on_task)
    version = int(run.output("register-models") or 0)
    state, decision, report = "none", "no new candidate: production already serves the best code", None
    if version:
        with Registry(config.registry_url or default_registry_url(settings)) as registry:
            state, decision = registry.get(version).state, registry.audit(version)[-1].reason
        indexed = [entry for entry in run.indexed if entry.kind == "experiment" and entry.report is not None]
        report = indexed[0].report if indexed else None
    result = MainJobResult(run, version, state, decision, report)
    (run.folder / "summary.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    return result
