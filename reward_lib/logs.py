"""Simulated A/B logs for alignment, read from experiment runs or reference logs.

A log is an experiment run folder (``evorec experiment run``, or ``ab_testing.reference_logs`` for
reference policies) or any ``events.parquet`` in the schema of ``recsys.event_log``: reward_lib
reads that schema and never imports the simulator that writes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from recsys.event_log import EventLog
from reward_lib.alignment import AlignmentData, prepare_log
from reward_lib.errors import RewardError

LOG_COLUMNS = ("day", "user", "arm", "item", "position", "chosen", "satisfaction")


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
