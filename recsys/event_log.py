"""What happened on a simulated day, and the event log that keeps it as Parquet.

The log is the raw record of an experiment (one row per impression, one per absent user and day),
from which reports can recount any metric; the simulation's per-user summary is what the
statistics use. Rows go out one row group per day, so a long run's memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

NO_CHOICE = -1  # chosen_position of a visit where the user took nothing
ABSENT_POSITION = -1  # position of the row of a user who did not come back that day

SCHEMA = pa.schema(
    [
        ("day", pa.int32()),
        ("user", pa.int32()),
        ("arm", pa.dictionary(pa.int8(), pa.string())),
        ("item", pa.int32()),
        ("position", pa.int16()),
        ("chosen", pa.bool_()),
        ("satisfaction", pa.float32()),
        ("consumption", pa.float32()),
        ("returned", pa.bool_()),
        ("left", pa.bool_()),
    ]
)


@dataclass(frozen=True)
class DayOutcome:
    """One simulated day: the visits of the users who came back, and who stayed away.

    Args:
        day: the simulation day (negative in a pre-period).
        users: ``A`` ids of the users who visited.
        slates: ``A X K`` items shown, by position (0 marks an empty slot).
        chosen_position: ``A`` slate position taken, ``NO_CHOICE`` when nothing was.
        satisfaction: ``A`` satisfaction of the visit (of the chosen item, or of choosing nothing).
        consumption: ``A`` share of the chosen item consumed, in [0, 1] (0 when nothing was chosen).
        left: ``A`` the user left for good after this visit.
        absent: ids of the users still in the population who did not come back.
    """

    day: int
    users: np.ndarray
    slates: np.ndarray
    chosen_position: np.ndarray
    satisfaction: np.ndarray
    consumption: np.ndarray
    left: np.ndarray
    absent: np.ndarray

    @property
    def clicked(self) -> np.ndarray:
        return self.chosen_position != NO_CHOICE

    @property
    def chosen_item(self) -> np.ndarray:
        """``A`` item taken per visit, 0 when nothing was."""
        rows = np.arange(len(self.users))
        return np.where(self.clicked, self.slates[rows, np.maximum(self.chosen_position, 0)], 0)

    @property
    def impressions(self) -> np.ndarray:
        """``A`` items shown per visit (empty slots do not count)."""
        return (self.slates > 0).sum(axis=1)


class EventLog:
    """Impression and absence events of a simulation, in memory or streamed to one Parquet file.

    Columns: day, user, arm, item, position, chosen, satisfaction (the visit's, on every row of the
    visit), consumption (the share of the item consumed: the visit's on the chosen row, 0 on the
    other rows, NaN on an absence), returned, left. A user who stayed away has one row with item 0,
    position -1 and returned False; a user who has left has no rows at all.

    Args:
        arms: arm names; ``record`` takes arm indices into them.
        path: when given, every ``record`` appends a row group to this file (bounded memory);
            otherwise rows stay in memory until ``write``.
    """

    def __init__(self, arms: Sequence[str], path: Path | None = None) -> None:
        self._arms = pa.array(list(arms), pa.string())
        self._tables: list[pa.Table] = []
        self._writer = pq.ParquetWriter(path, SCHEMA) if path is not None else None
        self.num_rows = 0

    def record(self, outcome: DayOutcome, assignment: np.ndarray) -> None:
        """Add a day's events; ``assignment`` holds every user's arm index."""
        table = _day_table(outcome, assignment, self._arms)
        self.num_rows += table.num_rows
        if self._writer is not None:
            self._writer.write_table(table)
        else:
            self._tables.append(table)

    def write(self, path: Path) -> None:
        """Write an in-memory log to ``path``; a streamed log is already in its file (``close`` it)."""
        if self._writer is not None:
            raise ValueError("this log streams to its own file; call close() instead of write()")
        pq.write_table(pa.concat_tables(self._tables) if self._tables else SCHEMA.empty_table(), path)

    def close(self) -> None:
        """Finish a streamed file (a no-op for an in-memory log)."""
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    @staticmethod
    def read(path: Path) -> pd.DataFrame:
        """A written log as a frame (arm as a categorical)."""
        return pq.read_table(path).to_pandas()


def _day_table(outcome: DayOutcome, assignment: np.ndarray, arms: pa.Array) -> pa.Table:
    """Impression rows of the visits (empty slots skipped), then one row per absent user."""
    row, position = np.nonzero(outcome.slates > 0)
    absent = len(outcome.absent)
    chosen = outcome.chosen_position[row] == position
    users = np.concatenate([outcome.users[row], outcome.absent])
    columns = {
        "day": np.full(len(users), outcome.day),
        "user": users,
        "item": np.concatenate([outcome.slates[row, position], np.zeros(absent, dtype=np.int64)]),
        "position": np.concatenate([position, np.full(absent, ABSENT_POSITION)]),
        "chosen": np.concatenate([chosen, np.zeros(absent, dtype=bool)]),
        "satisfaction": np.concatenate([outcome.satisfaction[row], np.full(absent, np.nan)]),
        "consumption": np.concatenate([np.where(chosen, outcome.consumption[row], 0.0), np.full(absent, np.nan)]),
        "returned": np.concatenate([np.ones(len(row), dtype=bool), np.zeros(absent, dtype=bool)]),
        "left": np.concatenate([outcome.left[row], np.zeros(absent, dtype=bool)]),
    }
    arrays = {
        name: pa.array(values.astype(SCHEMA.field(name).type.to_pandas_dtype())) for name, values in columns.items()
    }
    arrays["arm"] = pa.DictionaryArray.from_arrays(pa.array(assignment[users].astype(np.int8)), arms)
    return pa.table(arrays, schema=SCHEMA)
