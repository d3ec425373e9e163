"""The event table a reward reads: one row per event, in the same columns whatever the source.

Two sources feed it. Training data (a prepared dataset's interactions) has a timestamp and often
a rating: every logged interaction is a ``click``. A simulated A/B log has impressions: the chosen
one is a ``click``, the others on the same visit are ``skip``s, with the share of the item watched.
A table holds only the columns its source records, so a reward that needs a column the source
lacks is caught by validation instead of reading made-up values.

Rows of one user are in time order (within a day, in table order): signals that look at a
user's history (``diversity``) rely on it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd

from recsys.event_log import ABSENT_POSITION

ColumnKind = Literal["integer", "number", "text", "list"]
COLUMNS: dict[str, ColumnKind] = {
    "user": "integer",
    "item": "integer",
    "timestamp": "integer",  # seconds since the epoch
    "day": "integer",
    "session": "integer",  # one id per visit (A/B) or per burst of activity (training data)
    "position": "integer",  # slate position (A/B) or position in the user's history (training data)
    "event": "text",  # click or skip
    "rating": "number",
    "watch_fraction": "number",  # share of the item consumed, in [0, 1]
    "genres": "list",  # the item's genres
}
"""Every column an event table may have, and what kind of values it holds."""

EVENT_TYPES = ("click", "skip")
SECONDS_PER_DAY = 86_400
SESSION_GAP_SECONDS = 30 * 60  # a pause this long starts a new session


def _genres(items: pd.DataFrame, item_ids: np.ndarray) -> pd.Series:
    """Each event's item genres (shared array objects, so a large table costs one pointer per row)."""
    lookup = pd.Series(items["genres"].to_numpy(), index=items["item_idx"].to_numpy())
    return pd.Series(lookup.reindex(item_ids).to_numpy(), name="genres")


def from_interactions(frame: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """A prepared dataset's interactions (``user_idx, item_idx, timestamp, rating, position``, by
    user then time) as an event table of clicks; ``items`` (``item_idx, genres``) adds genres."""
    users = frame["user_idx"].to_numpy(np.int64)
    timestamps = frame["timestamp"].to_numpy(np.int64)
    starts = np.ones(len(frame), dtype=bool)
    starts[1:] = (users[1:] != users[:-1]) | (np.diff(timestamps) > SESSION_GAP_SECONDS)
    events = pd.DataFrame(
        {
            "user": users,
            "item": frame["item_idx"].to_numpy(np.int64),
            "timestamp": timestamps,
            "day": timestamps // SECONDS_PER_DAY,
            "session": np.cumsum(starts) - 1,
            "position": frame["position"].to_numpy(np.int64),
            "event": pd.Categorical.from_codes(np.zeros(len(frame), dtype=np.int8), EVENT_TYPES),
            "rating": frame["rating"].to_numpy(np.float64, na_value=np.nan),
        }
    )
    if items is not None:
        events["genres"] = _genres(items, events["item"].to_numpy())
    return events


def shown(log: pd.DataFrame) -> pd.DataFrame:
    """The impression rows of an A/B log (absent users' rows dropped), index reset."""
    return log[log["position"].to_numpy() != ABSENT_POSITION].reset_index(drop=True)


def from_experiment_log(log: pd.DataFrame, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """The impressions of an A/B event log (``recsys.event_log``) as clicks and skips, row for row
    with :func:`shown`; one session per visit, the watched share when the log records it."""
    rows = shown(log)
    users = rows["user"].to_numpy(np.int64)
    days = rows["day"].to_numpy(np.int64)
    visit = pd.MultiIndex.from_arrays([users, days]).factorize()[0]
    events = pd.DataFrame(
        {
            "user": users,
            "item": rows["item"].to_numpy(np.int64),
            "day": days,
            "session": visit,
            "position": rows["position"].to_numpy(np.int64),
            "event": pd.Categorical.from_codes(np.where(rows["chosen"].to_numpy(bool), 0, 1), EVENT_TYPES),
        }
    )
    if "consumption" in rows:
        events["watch_fraction"] = rows["consumption"].to_numpy(np.float64)
    if items is not None:
        events["genres"] = _genres(items, events["item"].to_numpy())
    return events
