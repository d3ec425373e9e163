"""The world model behind the simulated users: it follows what they just consumed, and it is calibrated."""

from __future__ import annotations

import numpy as np

from ab_testing.fidelity import random_ndcg
from ab_testing.ground_truth import FitSettings, GroundTruth, next_item_ndcg, recent_items
from ab_testing.population import Population, PopulationConfig
from recsys.data.prepared import PreparedDataset
from recsys.sequences import UserSequences

SERIES = (1, 2, 3)  # a series: part 1, part 2, part 3
UNRELATED = 4  # as popular as part 3 and consumed by the same users, but never right after part 2
FILLER = np.arange(5, 41)


def _series_sequences(seed: int = 0) -> UserSequences:
    """Users who watched the whole series (and the unrelated item, elsewhere), and users who just watched parts 1 and 2.

    Every event but each user's last two is training; the last two are valid and test (leave-one-out).
    """
    rng = np.random.default_rng(seed)
    sequences = []
    for _ in range(300):  # the whole series somewhere, the unrelated item somewhere else
        filler = list(rng.choice(FILLER, 12, replace=False))
        start = int(rng.integers(0, 6))
        history = filler[:start] + list(SERIES) + filler[start:8] + [UNRELATED] + filler[8:]
        sequences.append(history)
    for _ in range(100):  # just watched parts 1 and 2
        sequences.append(list(rng.choice(FILLER, 10, replace=False)) + list(SERIES[:2]))
    items = np.concatenate(sequences).astype(np.int64)
    split = np.concatenate([[0] * (len(s) - 2) + [1, 2] for s in sequences]).astype(np.int8)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in sequences])]).astype(np.int64)
    ratings = np.full(len(items), np.nan, dtype=np.float32)
    return UserSequences(len(sequences), int(FILLER.max()), items, split, ratings, offsets)


def test_a_user_who_just_watched_a_series_prefers_its_next_part_over_an_equally_liked_item() -> None:
    sequences = _series_sequences()
    genres = np.zeros((sequences.num_items + 1, 1), dtype=np.float32)
    truth = GroundTruth.from_sequences(sequences, genres, FitSettings(factors=4, iterations=5))
    assert truth.item_popularity[SERIES[2]] == truth.item_popularity[UNRELATED]

    watched = np.arange(300, 400)  # the users whose last items are parts 1 and 2
    slate = np.tile([UNRELATED, SERIES[2]], (len(watched), 1))  # the unrelated item in the better position
    recent = recent_items(sequences, truth.window)[watched]
    assert (recent[:, -2:] == SERIES[:2]).all()
    utility = truth.utility(truth.user_factors[watched], recent, slate, truth.user_log_normalisers[watched])
    assert (utility[:, 1] > utility[:, 0] + 1.0).all()
    # the same users with the series in their past but something else just watched do not prefer part 3 so much
    elsewhere = recent.copy()
    elsewhere[:, -2:] = FILLER[:2]
    other = truth.utility(truth.user_factors[watched], elsewhere, slate, truth.user_log_normalisers[watched])
    assert np.mean(utility[:, 1] - utility[:, 0]) > np.mean(other[:, 1] - other[:, 0]) + 1.0

    config = PopulationConfig(users=3000, days=1, pre_period_days=0, slate_size=2)
    population = Population.sample(truth, sequences, config)
    users = np.flatnonzero(population.source_user >= 300)
    choices = population.step(0, users, np.tile([UNRELATED, SERIES[2]], (len(users), 1))).chosen_position
    assert (choices == 1).mean() > 2 * (choices == 0).mean()


def test_the_world_model_predicts_held_out_next_items_and_is_fitted_without_them(
    prepared_small: PreparedDataset,
) -> None:
    sequences = UserSequences.from_prepared(prepared_small)
    truth = GroundTruth.fit(prepared_small, FitSettings(factors=8, iterations=4))
    held_out = GroundTruth.fit(
        prepared_small, FitSettings(factors=8, iterations=4, last_split=1, choice_weights=truth.choice_weights)
    )
    test_events = int((sequences.split == 2).sum())
    assert held_out.item_popularity.sum() == len(sequences.items) - test_events
    assert truth.item_popularity.sum() == len(sequences.items)
    # the calibrated blend ranks held-out next items far better than chance (60 users only)
    assert next_item_ndcg(held_out, sequences, "test") > 3 * random_ndcg(sequences)
    assert truth.choice_weights.shape == (4,) and truth.choice_weights[1] > 0
