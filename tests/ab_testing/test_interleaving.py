"""Team-draft interleaving: how slates are drafted, and what the simulated users' clicks say."""

from __future__ import annotations

import numpy as np
import pytest

from ab_testing.ground_truth import GroundTruth
from ab_testing.interleaving import CANDIDATE, NO_TEAM, PRODUCTION, interleave, preference_test, team_draft
from ab_testing.population import Population, PopulationConfig, oracle_policy, popularity_policy, random_policy
from recsys.sequences import UserSequences


def _population(truth: GroundTruth, sequences: UserSequences, users: int, seed: int = 0) -> Population:
    return Population.sample(truth, sequences, PopulationConfig(users=users, days=1, pre_period_days=0, seed=seed))


def _rankings(rng: np.random.Generator, users: int, size: int, pool: int) -> np.ndarray:
    """Distinct items per row from a small pool, so the two rankings overlap a lot."""
    return np.argsort(rng.random((users, pool)), axis=1)[:, :size] + 1


def test_a_team_draft_slate_takes_each_item_once_from_one_ranking_in_that_rankings_order():
    rng = np.random.default_rng(7)
    production, candidate = _rankings(rng, 500, 10, 14), _rankings(rng, 500, 10, 14)
    draft = team_draft(production, candidate, np.random.default_rng(0))
    assert draft.slates.shape == (500, 10) and (draft.slates > 0).all() and (draft.teams != NO_TEAM).all()
    assert all(len(set(row)) == 10 for row in draft.slates.tolist())
    sizes = (draft.teams == CANDIDATE).sum(axis=1)
    assert np.abs(2 * sizes - 10).max() <= 1  # 5 and 5 each time, as the slate size is even
    for team, ranking in ((PRODUCTION, production), (CANDIDATE, candidate)):
        for user in range(500):
            picked = draft.slates[user][draft.teams[user] == team].tolist()
            positions = [ranking[user].tolist().index(item) for item in picked]  # each item is from its team's list
            assert positions == sorted(positions)
    firsts = draft.slates[:, 0]
    assert ((firsts == production[:, 0]) | (firsts == candidate[:, 0])).all()
    assert 0.4 < (draft.teams[:, 0] == CANDIDATE).mean() < 0.6  # a fair coin picks who goes first


def test_odd_slates_differ_by_one_pick_and_a_ranking_that_runs_out_leaves_its_turn():
    rng = np.random.default_rng(3)
    production, candidate = _rankings(rng, 200, 5, 8), _rankings(rng, 200, 5, 8)
    sizes = (team_draft(production, candidate, rng).teams == CANDIDATE).sum(axis=1)
    assert set(sizes.tolist()) == {2, 3}
    short = production.copy()
    short[:, 2:] = 0  # production has only two items to give
    draft = team_draft(short, candidate, rng)
    assert (draft.slates > 0).all() and ((draft.teams == PRODUCTION).sum(axis=1) <= 2).all()


def test_a_model_interleaved_with_itself_shows_its_own_ranking_and_wins_half_the_time(truth, sequences):
    population = _population(truth, sequences, 3000)
    policy = popularity_policy(truth, population.config.slate_size)
    users = np.arange(population.num_users)
    ranking = policy(users, population.histories(users))
    np.testing.assert_array_equal(team_draft(ranking, ranking, np.random.default_rng(0)).slates, ranking)
    result = interleave(population, policy, policy)
    assert result.wins + result.losses > 500
    assert abs(result.share - 0.5) < 0.05 and result.ci_low < 0.5 < result.ci_high
    assert not result.significant and not result.candidate_loses


def test_the_oracle_beats_random_slates_with_a_few_hundred_users(truth, sequences):
    population = _population(truth, sequences, 300)
    size = population.config.slate_size
    oracle, floor = oracle_policy(truth, population), random_policy(truth.num_items, size, seed=1)
    better = interleave(population, floor, oracle)
    assert better.significant and better.share > 0.8 and better.p_value < 1e-6 and not better.candidate_loses
    again = _population(truth, sequences, 300)
    worse = interleave(again, oracle_policy(truth, again), random_policy(truth.num_items, size, seed=1))
    assert worse.candidate_loses and worse.share < 0.2
    assert worse.wins + worse.losses + worse.ties == 300
    assert "sign test p=" in worse.summary() and worse.to_json()["candidate_loses"] is True


def test_the_sign_test_counts_users_not_clicks():
    candidate = np.array([3] * 15 + [0] * 5 + [1] * 10)  # 15 wins however many clicks, 5 losses, 10 ties
    production = np.array([0] * 15 + [1] * 5 + [1] * 10)
    result = preference_test(candidate, production, alpha=0.05)
    assert (result.wins, result.losses, result.ties) == (15, 5, 10) and result.share == 0.75
    assert result.p_value == pytest.approx(0.041389, abs=1e-6)  # 2 * P(Binomial(20, 1/2) >= 15)
    assert result.significant and not result.candidate_loses and result.ci_low < 0.75 < result.ci_high
    silent = preference_test(np.zeros(40), np.zeros(40), alpha=0.05)
    assert (silent.ties, silent.share, silent.p_value, silent.significant) == (40, 0.5, 1.0, False)
