"""Named per-event signals that rewards are built from, each a function of event-table columns.

A signal returns one float per event, NaN where its value is unknown (a missing rating, the next
day of the table's last day). It declares the columns it reads, so a reward that uses it on a table
without them is refused with the column's name, and the range of its values, so a reward's output
range can be worked out before it runs. ``@signal`` registers more (e.g. a purchase signal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from reward_lib.errors import RewardError

SignalFunction = Callable[[pd.DataFrame], np.ndarray]
DIVERSITY_WINDOW = 5  # earlier clicks of the user the diversity signal compares an item with


@dataclass(frozen=True)
class Signal:
    """A registered signal: ``compute(events)`` gives ``E`` floats within ``bounds`` (or NaN)."""

    name: str
    columns: tuple[str, ...]
    bounds: tuple[float, float]
    compute: SignalFunction
    description: str


SIGNALS: dict[str, Signal] = {}


def signal(
    name: str, columns: Sequence[str], bounds: tuple[float, float] = (-math.inf, math.inf)
) -> Callable[[SignalFunction], SignalFunction]:
    """Register ``function(events) -> E floats`` as the signal ``name`` that reward specs can use.

    Example::

        @signal("purchase", ["event"], bounds=(0, 1))
        def purchase(events):
            return (events["event"].to_numpy() == "purchase").astype(float)
    """

    def register(function: SignalFunction) -> SignalFunction:
        if name in SIGNALS:
            raise RewardError(f"signal {name!r} is already registered")
        description = (function.__doc__ or "").strip().splitlines()[0] if function.__doc__ else ""
        SIGNALS[name] = Signal(name, tuple(columns), bounds, function, description)
        return function

    return register


def _is(events: pd.DataFrame, kind: str) -> np.ndarray:
    return np.asarray(events["event"].astype(str).to_numpy() == kind, dtype=np.float64)


@signal("click", ["event"], (0.0, 1.0))
def click(events: pd.DataFrame) -> np.ndarray:
    """1 for a click (the chosen item of a visit, or a logged interaction), 0 otherwise."""
    return _is(events, "click")


@signal("skip", ["event"], (0.0, 1.0))
def skip(events: pd.DataFrame) -> np.ndarray:
    """1 for an item shown on a visit and passed over, 0 otherwise."""
    return _is(events, "skip")


@signal("rating", ["rating"])
def rating(events: pd.DataFrame) -> np.ndarray:
    """The explicit rating (NaN where there is none); its scale is the data's."""
    return events["rating"].to_numpy(np.float64, na_value=np.nan)


@signal("completion", ["watch_fraction"], (0.0, 1.0))
def completion(events: pd.DataFrame) -> np.ndarray:
    """The share of the item watched (0 for a skipped item)."""
    return events["watch_fraction"].to_numpy(np.float64, na_value=np.nan)


@signal("position", ["position"], (0.0, math.inf))
def position(events: pd.DataFrame) -> np.ndarray:
    """The slate position (0 = top), or the position in the user's history for training data."""
    return events["position"].to_numpy(np.float64)


@signal("novelty", ["item", "event"], (0.0, 1.0))
def novelty(events: pd.DataFrame) -> np.ndarray:
    """How rarely the item is clicked in the table: ``1 - log(1 + clicks) / log(1 + most clicks)``."""
    codes, uniques = pd.factorize(events["item"].to_numpy())
    counts = np.bincount(codes[click(events) > 0], minlength=len(uniques))
    top = counts.max(initial=0)
    if top == 0:
        return np.ones(len(events))
    return np.asarray(1.0 - np.log1p(counts[codes]) / np.log1p(top))


@signal("return_next_day", ["user", "day"], (0.0, 1.0))
def return_next_day(events: pd.DataFrame) -> np.ndarray:
    """1 when the user has an event the next day, 0 otherwise; NaN on the table's last day (unknown)."""
    users = events["user"].to_numpy(np.int64)
    days = events["day"].to_numpy(np.int64)
    if len(days) == 0:
        return np.zeros(0)
    first, span = days.min(), days.max() - days.min() + 2
    keys = users * span + (days - first)
    returned = np.isin(keys + 1, keys).astype(np.float64)
    returned[days == days.max()] = np.nan
    return returned


def _genre_vectors(events: pd.DataFrame) -> np.ndarray:
    """``E X G`` multi-hot genres of each event's item (built once per distinct item)."""
    codes, uniques = pd.factorize(events["item"].to_numpy())
    first = np.unique(codes, return_index=True)[1]
    per_item = pd.Series(
        [g if isinstance(g, list | tuple | np.ndarray) else [] for g in events["genres"].to_numpy()[first]]
    ).explode()
    per_item = per_item[per_item.notna()]
    names, columns = pd.factorize(per_item.to_numpy())
    matrix = np.zeros((len(uniques), max(len(columns), 1)), dtype=np.float32)
    matrix[per_item.index.to_numpy(np.int64), names] = 1.0
    return matrix[codes]


@signal("diversity", ["user", "day", "item", "event", "genres"], (0.0, 1.0))
def diversity(events: pd.DataFrame) -> np.ndarray:
    """How unlike the user's last five earlier clicks the item is: 1 - cosine of genre vectors.

    1 when the user has no earlier click; NaN when the item has no genre.
    """
    order = np.lexsort((np.arange(len(events)), events["day"].to_numpy(), events["user"].to_numpy()))
    users = events["user"].to_numpy(np.int64)[order]
    genres = _genre_vectors(events)[order]
    clicked = click(events)[order] > 0
    cumulative = np.vstack([np.zeros((1, genres.shape[1]), np.float64), np.cumsum(genres[clicked], axis=0)])
    before: np.ndarray = np.cumsum(clicked) - clicked  # the user's and earlier users' clicks before each row
    new_user = np.ones(len(users), dtype=bool)
    new_user[1:] = users[1:] != users[:-1]
    user_start = np.maximum.accumulate(np.where(new_user, before, 0))
    window_start = np.maximum(user_start, before - DIVERSITY_WINDOW)
    recent = cumulative[before] - cumulative[window_start]
    norms = np.linalg.norm(genres, axis=1) * np.linalg.norm(recent, axis=1)
    cosine = np.einsum("eg,eg->e", genres, recent) / np.where(norms > 0, norms, 1.0)
    values = np.where(norms > 0, 1.0 - cosine, 1.0)
    values[genres.sum(axis=1) == 0] = np.nan
    result = np.empty(len(events))
    result[order] = values
    return result
