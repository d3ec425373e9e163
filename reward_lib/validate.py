"""Is a reward safe to use on this event table? Checks with messages that say what to change.

- static: the output is bounded (a spec's worked-out range is finite; a Python reward declares
  bounds), and no ``log`` meets values at or below -1;
- table: every column the reward needs is there, with values of the expected kind;
- values: one finite value per event (NaN and infinities are reported with their row), within
  the reward's bounds;
- monotonicity: for each declared column, raising it on every event never lowers (``increasing``)
  or raises (``decreasing``) any event's reward, tried over shifts spanning the column's range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from recsys.event_table import COLUMNS
from reward_lib.errors import RewardError
from reward_lib.rewards import Reward, component_range, output_range
from reward_lib.spec import Direction

Check = Literal[
    "unbounded", "log_domain", "missing_column", "wrong_type", "non_finite", "out_of_bounds", "monotonicity"
]
SHIFTS = 9  # shifts of a column tried by the monotonicity check, from -span to +span
MONOTONE_ROWS = 5000  # events sampled for the monotonicity check
ROWS_SHOWN = 3  # offending rows named in one message
TOLERANCE = 1e-9
KIND_CHECKS = {
    "integer": (pd.api.types.is_integer_dtype, "integers"),
    "number": (lambda s: pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s), "numbers"),
    "text": (lambda s: not pd.api.types.is_numeric_dtype(s), "text"),
    "list": (pd.api.types.is_object_dtype, "lists"),
}


@dataclass(frozen=True)
class Issue:
    """A problem found; ``severity`` note: something could not be checked (not a failure)."""

    check: Check
    message: str
    row: int | None = None
    severity: Literal["error", "note"] = "error"


@dataclass(frozen=True)
class ValidationReport:
    """What :func:`validate` found for one reward on one event table."""

    reward: str
    source: str
    table: str
    rows: int
    issues: tuple[Issue, ...]

    @property
    def ok(self) -> bool:
        return not any(issue.severity == "error" for issue in self.issues)

    def to_text(self) -> str:
        verdict = "valid" if self.ok else "INVALID"
        lines = [f"reward {self.reward} ({self.source}) on {self.table} ({self.rows:,} events): {verdict}"]
        lines += [f"  {issue.severity}: {issue.check}: {issue.message}" for issue in self.issues]
        return "\n".join(lines)

    def raise_if_invalid(self) -> None:
        if not self.ok:
            raise RewardError(self.to_text())


def describe_row(events: pd.DataFrame, row: int) -> str:
    """``row 17 (user 4, item 12, day 2)``: enough to find the event again."""
    context = ", ".join(f"{c} {events[c].iloc[row]}" for c in ("user", "item", "day") if c in events.columns)
    return f"row {row} ({context})" if context else f"row {row}"


def check_static(reward: Reward) -> list[Issue]:
    """Bounded output and a ``log`` that never meets values at or below -1 (specs are worked out)."""
    if reward.spec is None:
        if reward.bounds is None:
            return [Issue("unbounded", f"{reward.source} declares no bounds: give @reward(..., bounds=(low, high))")]
        return []
    issues = []
    for component in reward.spec.components:
        low, high = component_range(component)
        if any(t.kind == "log" for t in component.transforms) and low == -math.inf and component.weight != 0:
            issues.append(Issue("log_domain", f"component {component.label}: log of values that may be <= -1 "
                                              "gives NaN; clip or normalise before it"))  # fmt: skip
        elif component.weight != 0 and not (math.isfinite(low) and math.isfinite(high)):
            issues.append(Issue("unbounded", f"component {component.label} ranges over [{low:g}, {high:g}]: "
                                             "add a clip or normalise transform"))  # fmt: skip
    if not issues and reward.spec.bounds is not None:
        low, high = output_range(reward.spec)
        declared = reward.spec.bounds
        if low < declared[0] - TOLERANCE or high > declared[1] + TOLERANCE:
            issues.append(Issue("unbounded", f"the components can reach [{low:g}, {high:g}], outside the declared "
                                             f"bounds [{declared[0]:g}, {declared[1]:g}]"))  # fmt: skip
    return issues


def check_table(reward: Reward, events: pd.DataFrame) -> list[Issue]:
    """Every needed column present, each known column holding the kind of values it should."""
    issues = []
    for column in sorted(reward.columns - set(events.columns)):
        issues.append(Issue("missing_column", f"needs column {column!r}, which the events lack (they have "
                                              f"{', '.join(map(str, events.columns))})"))  # fmt: skip
    for column in sorted(set(events.columns) & set(COLUMNS)):
        accepts, expected = KIND_CHECKS[COLUMNS[column]]
        if not accepts(events[column]):
            issues.append(Issue("wrong_type", f"column {column!r} holds {events[column].dtype} values; "
                                              f"expected {expected}"))  # fmt: skip
    return issues


def _rows(events: pd.DataFrame, rows: np.ndarray, values: np.ndarray) -> str:
    shown = "; ".join(f"{describe_row(events, int(r))}: {values[r]:g}" for r in rows[:ROWS_SHOWN])
    more = f" and {len(rows) - ROWS_SHOWN} more" if len(rows) > ROWS_SHOWN else ""
    return f"{shown}{more}"


def check_values(reward: Reward, values: np.ndarray, events: pd.DataFrame) -> list[Issue]:
    """Finite values within the reward's bounds; the offending rows are named."""
    issues = []
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        issues.append(Issue("non_finite", f"{len(bad)} events get a NaN or infinite reward: "
                                          f"{_rows(events, bad, values)}", int(bad[0])))  # fmt: skip
    if reward.bounds is not None:
        low, high = reward.bounds
        outside = np.flatnonzero(np.isfinite(values) & ((values < low - TOLERANCE) | (values > high + TOLERANCE)))
        if len(outside):
            issues.append(Issue("out_of_bounds", f"{len(outside)} events fall outside the bounds [{low:g}, {high:g}]: "
                                                 f"{_rows(events, outside, values)}", int(outside[0])))  # fmt: skip
    return issues


def evaluate(reward: Reward, events: pd.DataFrame) -> np.ndarray:
    """The reward's values on ``events`` after the table and value checks; raises on any error."""
    issues = check_table(reward, events)
    values = reward(events) if not issues else np.zeros(0)
    issues = issues or check_values(reward, values, events)
    if issues:
        raise RewardError(
            ValidationReport(reward.key, reward.source, "the events", len(events), tuple(issues)).to_text()
        )
    return values


def shifts(values: pd.Series) -> np.ndarray:
    """Offsets spanning the column's observed range both ways (whole numbers for an integer column)."""
    finite = values.to_numpy(np.float64, na_value=np.nan)
    finite = finite[np.isfinite(finite)]
    span = float(np.ptp(finite)) if len(finite) else 0.0
    offsets = np.linspace(-(span or 1.0), span or 1.0, SHIFTS)
    return np.unique(np.round(offsets)) if pd.api.types.is_integer_dtype(values) else offsets


def shifted(events: pd.DataFrame, column: str) -> list[pd.DataFrame]:
    """Copies of ``events`` with ``column`` raised by each of :func:`shifts`, lowest first."""
    tables = []
    for offset in shifts(events[column]):
        table = events.copy()
        table[column] = events[column] + (int(offset) if pd.api.types.is_integer_dtype(events[column]) else offset)
        tables.append(table)
    return tables


def first_violation(values_by_shift: Sequence[np.ndarray], direction: Direction) -> tuple[int, int] | None:
    """``(row, shift)`` of the first event whose reward moves against ``direction`` from shift to shift+1."""
    stacked = np.vstack(values_by_shift)
    steps = np.diff(stacked, axis=0)
    wrong = steps < -TOLERANCE if direction == "increasing" else steps > TOLERANCE
    wrong &= np.isfinite(steps)
    if not wrong.any():
        return None
    shift_of, row_of = np.nonzero(wrong)
    first = int(np.argmin(row_of))
    return int(row_of[first]), int(shift_of[first])


def sample_rows(events: pd.DataFrame, size: int = MONOTONE_ROWS, seed: int = 0) -> np.ndarray:
    """Sorted positions of up to ``size`` events (the table's order kept for history-based signals)."""
    if len(events) <= size:
        return np.arange(len(events))
    return np.sort(np.random.default_rng(seed).choice(len(events), size, replace=False))


def check_monotone(reward: Reward, events: pd.DataFrame) -> list[Issue]:
    """Each declared monotone column, tried over shifts on a sample of the events."""
    issues = []
    rows = sample_rows(events)
    sample = events.iloc[rows].reset_index(drop=True)
    for column, direction in reward.monotone.items():
        if column not in events.columns:
            issues.append(Issue("monotonicity", f"{direction} in {column} not checked: the events have no "
                                                f"{column} column", severity="note"))  # fmt: skip
            continue
        tables = shifted(sample, column)
        found = first_violation([reward(table) for table in tables], direction)
        if found is not None:
            issues.append(violation(reward, column, direction, tables, found, events, int(rows[found[0]])))
    return issues


def violation(
    reward: Reward,
    column: str,
    direction: Direction,
    tables: Sequence[pd.DataFrame],
    found: tuple[int, int],
    events: pd.DataFrame,
    position: int,
) -> Issue:
    """The issue for ``found`` (row, shift) in the shifted ``tables``; ``position``: its row in ``events``."""
    row, shift = found
    before, after = (reward(tables[k])[row] for k in (shift, shift + 1))
    values = [tables[k][column].iloc[row] for k in (shift, shift + 1)]
    moved = "lowers" if direction == "increasing" else "raises"
    return Issue(
        "monotonicity",
        f"declared {direction} in {column}, but at {describe_row(events, position)} raising {column} from "
        f"{values[0]:g} to {values[1]:g} {moved} the reward from {before + 0.0:g} to {after + 0.0:g}",
        position,
    )


def validate(reward: Reward, events: pd.DataFrame, table: str = "the events") -> ValidationReport:
    """Every check of this module on one event table."""
    table_issues = check_table(reward, events)
    issues = check_static(reward) + table_issues
    if not table_issues:
        issues += check_values(reward, reward(events), events)
        issues += check_monotone(reward, events)
    return ValidationReport(reward.key, reward.source, table, len(events), tuple(issues))
