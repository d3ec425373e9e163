"""Personas measured from real histories, and the facts of the items a list shows them.

A persona is what a user's own history says about their taste (genres, era, how mainstream,
how varied), measured from the events a model may see before ``stage`` so that the held-out item
never shapes the critique of a list that is scored on it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy.stats import rankdata

from recsys.data.prepared import PreparedDataset
from recsys.errors import DataError
from recsys.sequences import SPLIT_CODES, Stage, UserSequences

Activity = Literal["light", "medium", "heavy"]
ACTIVITY_LEVELS: tuple[Activity, ...] = ("light", "medium", "heavy")
FAVOURITES = 5
LIKED_RATING = 4.0
SHOWN_GENRES = 3
# Thresholds of the words describe() uses (history popularity percentile, normalised entropy).
MAINSTREAM = 0.8
OFFBEAT = 0.55
VARIED = 0.8
NARROW = 0.7


class ShownItem(BaseModel):
    """One recommended item as a persona (and the language model) sees it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_idx: int
    title: str
    genres: list[str]
    year: int | None
    popularity: int
    popularity_percentile: float


@dataclass(frozen=True)
class ItemFacts:
    """Per item idx (row 0 pads): title, genres, year and training popularity, read once per run."""

    titles: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]
    years: np.ndarray  # float64, NaN where unknown
    popularity: np.ndarray  # int64 training interactions
    percentile: np.ndarray  # float64 in 0..1, 1 for the most popular item
    genre_count: int

    @classmethod
    def build(cls, prepared: PreparedDataset, sequences: UserSequences) -> ItemFacts:
        size = prepared.num_items + 1
        titles, years = [""] * size, np.full(size, np.nan)
        genres: list[tuple[str, ...]] = [()] * size
        items = prepared.items
        columns = zip(items["item_idx"], items["item_id"], items["title"], items["year"], items["genres"], strict=True)
        for idx, item_id, title, year, names in columns:
            titles[idx] = title if isinstance(title, str) else f"item {item_id}"
            genres[idx] = tuple(names) if names is not None else ()
            years[idx] = year if pd.notna(year) else np.nan
        popularity = sequences.train_counts()
        genre_count = len({g for item_genres in genres for g in item_genres})
        return cls(tuple(titles), tuple(genres), years, popularity, popularity_percentiles(popularity), genre_count)

    def shown(self, item_idxs: Iterable[int]) -> list[ShownItem]:
        return [self._shown(int(idx)) for idx in item_idxs]

    def _shown(self, idx: int) -> ShownItem:
        if not 0 < idx < len(self.titles):
            raise DataError(f"item idx {idx} is not in the catalogue (1..{len(self.titles) - 1})")
        year = self.years[idx]
        return ShownItem(
            item_idx=idx,
            title=self.titles[idx],
            genres=list(self.genres[idx]),
            year=None if np.isnan(year) else int(year),
            popularity=int(self.popularity[idx]),
            popularity_percentile=float(self.percentile[idx]),
        )


@dataclass(frozen=True)
class Persona:
    """A user's taste as measured from their history; ``catalogue_genres`` is the base of the
    entropies, so a persona's diversity and a list's are on the same scale."""

    user_idx: int
    user_id: str
    events: int
    activity: Activity
    genre_taste: dict[str, float]
    diversity: float
    conformity: float
    era: int | None
    era_spread: float
    favourites: list[str]
    catalogue_genres: int

    def top_genres(self, count: int = SHOWN_GENRES) -> list[str]:
        return list(self.genre_taste)[:count]

    def describe(self) -> str:
        """One first-person paragraph for prompts."""
        parts = [f"I watch about {self.events} films (a {self.activity} viewer)"]
        if self.genre_taste:
            tastes = ", ".join(f"{g} ({self.genre_taste[g]:.0%})" for g in self.top_genres())
            parts[0] += f", mostly {tastes}"
        parts.append(_variety_words(self.diversity))
        if self.era is not None:
            low, high = round(self.era - self.era_spread / 2), round(self.era + self.era_spread / 2)
            parts.append(f"I prefer films from around {self.era} (most from {low} to {high})")
        parts.append(_conformity_words(self.conformity))
        text = "; ".join(parts) + "."
        if self.favourites:
            text += " Films I liked lately: " + "; ".join(self.favourites) + "."
        return text


def _variety_words(diversity: float) -> str:
    if diversity >= VARIED:
        return "my taste is varied"
    return "my taste is narrow" if diversity < NARROW else "my taste is moderately varied"


def _conformity_words(conformity: float) -> str:
    if conformity >= MAINSTREAM:
        return "I mostly pick what everyone watches"
    return "I seldom pick what everyone watches" if conformity < OFFBEAT else "I mix popular and lesser-known films"


def popularity_percentiles(counts: np.ndarray) -> np.ndarray:
    """Each item's rank by training count among all items, scaled to 0..1 (ties share a rank)."""
    percentile = np.zeros(len(counts))
    real = len(counts) - 1
    if real > 1:
        percentile[1:] = (rankdata(counts[1:], method="average") - 1) / (real - 1)
    elif real == 1:
        percentile[1] = 1.0
    return percentile


def genre_shares(item_genres: Iterable[Sequence[str]]) -> dict[str, float]:
    """Share of each genre, every item's genres weighted 1/|genres|; sorted by share, descending."""
    weights: dict[str, float] = {}
    for genres in item_genres:
        for genre in genres:
            weights[genre] = weights.get(genre, 0.0) + 1 / len(genres)
    total = sum(weights.values())
    ranked = sorted(weights.items(), key=lambda pair: (-pair[1], pair[0]))
    return {genre: weight / total for genre, weight in ranked if weight > 0}


def normalised_entropy(shares: Iterable[float], categories: int) -> float:
    """Shannon entropy over ``log(categories)``: 0 for one genre, 1 for all genres equally."""
    if categories < 2:
        return 0.0
    entropy = -sum(p * math.log(p) for p in shares if p > 0)
    return min(1.0, entropy / math.log(categories))


def activity_levels(lengths: np.ndarray) -> list[Activity]:
    """Tertiles of training lengths: the light / medium / heavy segments of the evaluation."""
    edges = np.quantile(lengths, [1 / 3, 2 / 3])
    return [ACTIVITY_LEVELS[code] for code in np.digitize(lengths, edges, right=True)]


def build_personas(
    prepared: PreparedDataset,
    sequences: UserSequences,
    users: Sequence[int],
    stage: Stage | Literal["train"] = "test",
    facts: ItemFacts | None = None,
) -> list[Persona]:
    """Personas of ``users`` from the history a model sees before ``stage`` (no held-out item)."""
    if facts is None:
        facts = ItemFacts.build(prepared, sequences)
    lengths = sequences.train_lengths()
    levels = activity_levels(lengths)
    user_ids = dict(zip(prepared.users["user_idx"], prepared.users["user_id"], strict=True))
    return [_persona(facts, sequences, int(u), str(user_ids[u]), int(lengths[u]), levels[u], stage) for u in users]


def _persona(
    facts: ItemFacts,
    sequences: UserSequences,
    user: int,
    user_id: str,
    events: int,
    activity: Activity,
    stage: Stage | Literal["train"],
) -> Persona:
    items, ratings = _history(sequences, user, stage)
    taste = genre_shares(facts.genres[idx] for idx in items)
    years = facts.years[items]
    years = years[~np.isnan(years)]
    q25, median, q75 = np.quantile(years, [0.25, 0.5, 0.75]) if years.size else (0.0, np.nan, 0.0)
    return Persona(
        user_idx=user,
        user_id=user_id,
        events=events,
        activity=activity,
        genre_taste=taste,
        diversity=normalised_entropy(taste.values(), facts.genre_count),
        conformity=float(facts.percentile[items].mean()) if items.size else 0.0,
        era=None if np.isnan(median) else round(float(median)),
        era_spread=float(q75 - q25),
        favourites=_favourites(facts, items, ratings),
        catalogue_genres=facts.genre_count,
    )


def _history(sequences: UserSequences, user: int, stage: Stage | Literal["train"]) -> tuple[np.ndarray, np.ndarray]:
    """Items and ratings of :meth:`UserSequences.history` (train, plus valid events for test)."""
    items, split = sequences.events(user)
    start = sequences.offsets[user]
    ratings = sequences.ratings[start : start + len(items)]
    keep = split <= (SPLIT_CODES["valid"] if stage == "test" else SPLIT_CODES["train"])
    return items[keep], ratings[keep]


def _favourites(facts: ItemFacts, items: np.ndarray, ratings: np.ndarray) -> list[str]:
    """Titles of the most recent liked items (rating >= 4), or the most recent ones without ratings."""
    liked = np.nan_to_num(ratings, nan=-np.inf) >= LIKED_RATING
    chosen = items[liked] if liked.any() else items
    titles: list[str] = []
    for idx in chosen[::-1]:
        if facts.titles[idx] not in titles:
            titles.append(facts.titles[idx])
        if len(titles) == FAVOURITES:
            break
    return titles


def shown_items(prepared: PreparedDataset, sequences: UserSequences, item_idxs: Iterable[int]) -> list[ShownItem]:
    return ItemFacts.build(prepared, sequences).shown(item_idxs)


def sample_users(sequences: UserSequences, n: int, seed: int) -> np.ndarray:
    """``n`` users (at most all), sorted, drawn as evenly as the sizes allow from the three activity levels."""
    levels = np.array(activity_levels(sequences.train_lengths()))
    strata = [np.flatnonzero(levels == level) for level in ACTIVITY_LEVELS]
    quotas = _quotas([len(s) for s in strata], min(n, sequences.num_users))
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(stratum, quota, replace=False) for stratum, quota in zip(strata, quotas, strict=True)]
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _quotas(sizes: list[int], n: int) -> list[int]:
    """Equal shares of ``n``; a stratum too small to fill its share passes the rest to the larger ones."""
    quotas = [0] * len(sizes)
    remaining = n
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for position, stratum in enumerate(order):
        quotas[stratum] = min(sizes[stratum], remaining // (len(order) - position))
        remaining -= quotas[stratum]
    return quotas
