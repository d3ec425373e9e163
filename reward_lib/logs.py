"""Simulated A/B logs for alignment: reading them from experiment runs, and simulating reference ones.

A log is an experiment run folder (``evorec experiment run``) or any ``events.parquet`` written by
``ab_testing.events.EventLog``. Reference logs need no trained model: their arms are the
simulator's reference policies (random, popularity, the oracle that knows the users' taste), so
alignment can be measured and tuned on a dataset before any candidate was exported.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ab_testing.events import EventLog
from reward_lib.alignment import AlignmentData, prepare_log
from reward_lib.errors import RewardError

if TYPE_CHECKING:
    from ab_testing.experiment import ExperimentPlan
    from ab_testing.ground_truth import GroundTruth
    from recsys.data.prepared import PreparedDataset

LOG_COLUMNS = ("day", "user", "arm", "item", "position", "chosen", "satisfaction")
REFERENCE_POLICIES = ("random", "popularity", "oracle")


@dataclass(frozen=True)
class LogFile:
    """An A/B log on disk: its Parquet file, a name for reports, the dataset its plan names (if any)."""

    path: Path
    name: str
    dataset: str | None

    @classmethod
    def find(cls, path: Path) -> LogFile:
        """``path`` is ``events.parquet`` or a folder holding one (an experiment run)."""
        file = path / "events.parquet" if path.is_dir() else path
        if not file.is_file():
            raise RewardError(f"{path}: no A/B event log here (expected events.parquet, or a run folder holding one)")
        plan = file.parent / "plan.json"
        dataset = json.loads(plan.read_text()).get("dataset") if plan.is_file() else None
        return cls(file, file.parent.name if file.name == "events.parquet" else file.stem, dataset)

    def read(self, items: pd.DataFrame | None = None, split_day: int | None = None) -> AlignmentData:
        """The log prepared for alignment; ``items`` (``item_idx, genres``) gives events their genres."""
        log = EventLog.read(self.path)
        missing = [column for column in LOG_COLUMNS if column not in log.columns]
        if missing:
            raise RewardError(f"{self.path}: not an A/B event log: column(s) {', '.join(missing)} missing")
        return prepare_log(log, self.name, items, split_day)


def simulate_reference_log(
    plan: ExperimentPlan, prepared: PreparedDataset, folder: Path, ground_truth: GroundTruth | None = None
) -> LogFile:
    """Run ``plan`` with reference policies as arms (names among ``REFERENCE_POLICIES``) and write
    ``plan.json`` and ``events.parquet`` to ``folder``; users are assigned by the plan's salted hash."""
    from ab_testing.experiment import assign, simulated_user_ids
    from ab_testing.ground_truth import GroundTruth
    from ab_testing.population import Population, oracle_policy, popularity_policy, random_policy, simulate
    from recsys.sequences import UserSequences

    unknown = [arm.name for arm in plan.arms if arm.name not in REFERENCE_POLICIES]
    if unknown:
        raise RewardError(f"arm(s) {', '.join(unknown)}: a reference log's arms are among {REFERENCE_POLICIES}")
    truth = ground_truth or GroundTruth.fit(prepared, seed=plan.seed)
    population = Population.sample(truth, UserSequences.from_prepared(prepared), plan.population_config())
    slate = population.config.slate_size
    policies = {
        "random": lambda: random_policy(truth.num_items, slate, plan.seed),
        "popularity": lambda: popularity_policy(truth, slate),
        "oracle": lambda: oracle_policy(truth, population),
    }
    arms = {arm.name: policies[arm.name]() for arm in plan.arms}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(plan.model_dump_json(indent=2) + "\n")
    assignment = assign(plan, simulated_user_ids(population.num_users))
    with EventLog(list(arms), folder / "events.parquet") as log:
        simulate(population, arms, assignment, log=log)
    return LogFile.find(folder)
