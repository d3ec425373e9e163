"""Personas measured from the real ml-latest-small slice, and the seeded stratified user sample."""

from __future__ import annotations

import dataclasses
from collections import Counter

import numpy as np
import pytest

from offline_agent.simulator.personas import (
    activity_levels,
    build_personas,
    sample_users,
    shown_items,
)
from recsys.errors import DataError
from recsys.sequences import SPLIT_CODES, UserSequences


@pytest.fixture(scope="module")
def sequences(prepared_small) -> UserSequences:
    return UserSequences.from_prepared(prepared_small)


def test_sampling_is_deterministic_for_a_seed_sorted_and_without_duplicates(sequences):
    first, again, other = (
        sample_users(sequences, 12, seed=3),
        sample_users(sequences, 12, seed=3),
        sample_users(sequences, 12, seed=4),
    )
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert len(first) == 12 and len(set(first.tolist())) == 12 and np.all(np.diff(first) > 0)


def test_sampling_takes_the_activity_levels_equally(sequences):
    levels = activity_levels(sequences.train_lengths())
    assert Counter(levels[u] for u in sample_users(sequences, 12, seed=0)) == {"light": 4, "medium": 4, "heavy": 4}
    counts = Counter(levels[u] for u in sample_users(sequences, 10, seed=0))
    assert sorted(counts.values()) == [3, 3, 4]


def test_sampling_caps_n_at_the_number_of_users(sequences):
    assert sample_users(sequences, 1000, seed=0).tolist() == list(range(sequences.num_users))


def test_a_stratum_too_small_passes_its_share_to_the_others():
    # Training lengths 1,1,1,1,1,1,1,5,9: the tertile edges are both 1, so no user is "medium".
    lengths = np.array([1, 1, 1, 1, 1, 1, 1, 5, 9])
    items = np.arange(1, lengths.sum() + 1)
    sequences = UserSequences(
        num_users=9,
        num_items=int(lengths.sum()),
        items=items,
        split=np.zeros(len(items), np.int8),
        ratings=np.full(len(items), np.nan, np.float32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]),
    )
    levels = activity_levels(lengths)
    assert Counter(levels[u] for u in sample_users(sequences, 6, seed=0)) == {"light": 4, "heavy": 2}


def test_genre_taste_is_a_sorted_distribution_and_the_measures_are_in_range(prepared_small, sequences):
    personas = build_personas(prepared_small, sequences, range(sequences.num_users))
    for persona in personas:
        shares = list(persona.genre_taste.values())
        assert sum(shares) == pytest.approx(1.0)
        assert shares == sorted(shares, reverse=True) and min(shares) > 0
        assert 0 <= persona.diversity <= 1 and 0 <= persona.conformity <= 1
        assert persona.era is not None and 1900 < persona.era < 2020 and persona.era_spread >= 0
        assert 1 <= len(persona.favourites) <= 5
    assert {p.activity for p in personas} == {"light", "medium", "heavy"}
    assert [p.events for p in personas] == sequences.train_lengths().tolist()


def test_personas_do_not_see_the_held_out_item(prepared_small, sequences):
    users = range(sequences.num_users)
    rarest = int(np.argmin(sequences.train_counts()[1:]) + 1)
    swapped_test = dataclasses.replace(
        sequences, items=np.where(sequences.split == SPLIT_CODES["test"], rarest, sequences.items)
    )
    swapped_valid = dataclasses.replace(
        sequences, items=np.where(sequences.split == SPLIT_CODES["valid"], rarest, sequences.items)
    )
    before_test = build_personas(prepared_small, sequences, users, stage="test")
    assert build_personas(prepared_small, swapped_test, users, stage="test") == before_test
    # The swap is visible where it should be: the valid item is part of the history before "test".
    assert build_personas(prepared_small, swapped_valid, users, stage="test") != before_test
    assert build_personas(prepared_small, swapped_valid, users, stage="valid") == build_personas(
        prepared_small, sequences, users, stage="valid"
    )


def test_favourites_are_recent_liked_titles(prepared_small, sequences):
    persona = build_personas(prepared_small, sequences, [0], stage="test")[0]
    items, split = sequences.events(0)
    ratings = sequences.ratings[sequences.offsets[0] : sequences.offsets[1]]
    titles = dict(zip(prepared_small.items["item_idx"], prepared_small.items["title"], strict=True))
    liked = [titles[i] for i, s, r in zip(items, split, ratings, strict=True) if s <= 1 and r >= 4]
    assert persona.favourites[0] == liked[-1]
    assert set(persona.favourites) <= set(liked) and len(persona.favourites) == 5


def test_describe_speaks_in_the_first_person_of_the_top_genre_and_era(prepared_small, sequences):
    persona = build_personas(prepared_small, sequences, [0])[0]
    text = persona.describe()
    top = next(iter(persona.genre_taste))
    assert text.startswith(f"I watch about {persona.events} films")
    assert f"mostly {top} ({persona.genre_taste[top]:.0%})" in text
    assert f"from around {persona.era}" in text and persona.favourites[0] in text


def test_shown_items_carry_the_catalogue_facts(prepared_small, sequences):
    counts = sequences.train_counts()
    top = int(np.argmax(counts))
    item = shown_items(prepared_small, sequences, [top])[0]
    row = prepared_small.items.set_index("item_idx").loc[top]
    assert (item.title, item.year, item.genres) == (row["title"], row["year"], list(row["genres"]))
    assert item.popularity == counts[top] and item.popularity_percentile == 1.0
    with pytest.raises(DataError, match="not in the catalogue"):
        shown_items(prepared_small, sequences, [sequences.num_items + 1])
