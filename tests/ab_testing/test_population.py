"""The simulated population: true taste, choice, fatigue, retention, leaving, determinism, event log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from ab_testing.ground_truth import FitSettings, GroundTruth
from ab_testing.population import (
    Policy,
    Population,
    PopulationConfig,
    SimulationSummary,
    oracle_policy,
    popularity_policy,
    random_policy,
    simulate,
)
from recsys.data.prepared import PreparedDataset
from recsys.event_log import NO_CHOICE, DayOutcome, EventLog
from recsys.sequences import UserSequences

USERS = 2000
DAYS = 10


def _population(truth: GroundTruth, sequences: UserSequences, **overrides: float) -> Population:
    settings: dict[str, float] = {"users": USERS, "days": DAYS, "pre_period_days": 0, **overrides}
    return Population.sample(truth, sequences, PopulationConfig(**settings))


def _run(population: Population, policy: Policy, log: EventLog | None = None) -> SimulationSummary:
    return simulate(population, {"only": policy}, np.zeros(population.num_users, dtype=np.int64), log=log)


def test_ground_truth_scores_held_in_interactions_above_random_items(
    truth: GroundTruth, prepared_small: PreparedDataset
) -> None:
    frame = prepared_small.interactions
    users = frame["user_idx"].to_numpy(np.int64)
    items = frame["item_idx"].to_numpy(np.int64)
    others = np.random.default_rng(0).integers(1, truth.num_items + 1, len(items))
    held_in = truth.true_utility(users, items[:, None])[:, 0]
    random_items = truth.true_utility(users, others[:, None])[:, 0]
    assert (held_in > random_items).mean() > 0.8


def test_ground_truth_is_deterministic_for_a_seed(prepared_small: PreparedDataset) -> None:
    first = GroundTruth.fit(prepared_small, FitSettings(factors=8, iterations=3, seed=1))
    again = GroundTruth.fit(prepared_small, FitSettings(factors=8, iterations=3, seed=1))
    other = GroundTruth.fit(prepared_small, FitSettings(factors=8, iterations=3, seed=2))
    np.testing.assert_array_equal(first.user_factors, again.user_factors)
    np.testing.assert_array_equal(first.item_factors, again.item_factors)
    assert not np.allclose(first.user_factors, other.user_factors)


def test_utilities_are_standardised_per_user_over_the_catalogue(truth: GroundTruth) -> None:
    users = np.arange(truth.num_users)
    catalogue = np.arange(1, truth.num_items + 1)
    factor_part = truth.true_utility(users, catalogue) - truth.item_bias[catalogue]
    np.testing.assert_allclose(factor_part.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(factor_part.std(axis=1), 1.0, rtol=1e-3)
    assert truth.item_factors[0].tolist() == [0.0] * truth.item_factors.shape[1]


def test_affinity_takes_shared_or_per_user_items(truth: GroundTruth) -> None:
    latent = truth.user_factors[:3]
    shared = np.array([1, 5, 9, 2])
    per_user = np.tile(shared, (3, 1))
    assert truth.affinity(latent, shared).shape == (3, 4)
    np.testing.assert_allclose(truth.affinity(latent, shared), truth.affinity(latent, per_user), rtol=1e-5)


def test_oracle_satisfies_and_retains_users_better_than_random(truth: GroundTruth, sequences: UserSequences) -> None:
    oracle_population = _population(truth, sequences)
    oracle = _run(oracle_population, oracle_policy(truth, oracle_population)).experiment
    random = _run(_population(truth, sequences), random_policy(truth.num_items, 10, seed=0)).experiment

    assert np.nanmean(oracle.mean_satisfaction) > np.nanmean(random.mean_satisfaction) + 1.0
    assert oracle.clicks.sum() / oracle.active_days.sum() > random.clicks.sum() / random.active_days.sum() + 0.2
    assert oracle.active_days.mean() > random.active_days.mean() + 0.5
    assert oracle.left.mean() < random.left.mean() - 0.2


def test_showing_the_same_slate_every_day_tires_users(truth: GroundTruth, sequences: UserSequences) -> None:
    def satisfaction_drop(**fatigue: float) -> float:
        population = _population(truth, sequences, slate_size=3, **fatigue)
        everyone = np.arange(population.num_users)
        same = oracle_policy(truth, population)(everyone, population.histories(everyone))
        by_day = []
        for day in range(DAYS):
            users = population.active_today(day)
            by_day.append(population.step(day, users, same[users]).satisfaction.mean())
        return float(np.mean(by_day[:2]) - np.mean(by_day[-2:]))

    tired = satisfaction_drop()
    assert tired > 0.7
    # without fatigue satisfaction still drops (the users move on from what the slate followed), but less
    assert tired > satisfaction_drop(fatigue_repeat=0.0, fatigue_similarity=0.0) + 0.3


def test_nothing_is_chosen_more_often_from_bad_slates(truth: GroundTruth, sequences: UserSequences) -> None:
    catalogue = np.arange(1, truth.num_items + 1)

    def no_choice_share(best: bool) -> float:
        population = _population(truth, sequences)
        users = population.active_today(0)
        utility = truth.choice_logits(population.latent[users], population.recent(users))[:, 1:]
        ranked = catalogue[np.argsort(-utility if best else utility, axis=1)[:, :10]]
        return float((population.step(0, users, ranked).chosen_position == NO_CHOICE).mean())

    assert no_choice_share(best=False) > no_choice_share(best=True) + 0.3


def test_a_user_who_left_never_returns(truth: GroundTruth, sequences: UserSequences) -> None:
    population = _population(truth, sequences, leave_threshold=3.0, patience=2.0)
    policy = random_policy(truth.num_items, 10, seed=0)
    gone: set[int] = set()
    for day in range(DAYS):
        users = population.active_today(day)
        assert gone.isdisjoint(users.tolist())
        outcome = population.step(day, users, policy(users, population.histories(users)))
        assert gone.isdisjoint(outcome.absent.tolist())
        gone.update(users[outcome.left].tolist())
    assert len(gone) > USERS // 2
    assert population.left[list(gone)].all()
    with pytest.raises(ValueError, match="still in the population"):
        leaver = np.array([min(gone)])
        population.step(DAYS, leaver, policy(leaver, population.histories(leaver)))


def test_simulation_is_deterministic_for_a_seed(truth: GroundTruth, sequences: UserSequences) -> None:
    def frame(seed: int) -> object:
        population = _population(truth, sequences, users=500, seed=seed, pre_period_days=3)
        return _run(population, popularity_policy(truth, 10)).to_frame()

    first, again, other = frame(seed=1), frame(seed=1), frame(seed=2)
    assert first.equals(again)
    assert not first.equals(other)
    assert "pre_active_days" in first.columns


def test_histories_grow_with_what_users_consume(truth: GroundTruth, sequences: UserSequences) -> None:
    population = _population(truth, sequences)
    users = population.active_today(0)
    before = population.histories(users)
    outcome = population.step(0, users, popularity_policy(truth, 10)(users, before))
    after = population.histories(users)
    for row, user in enumerate(users):
        real = sequences.events(int(population.source_user[user]))[0]
        consumed = [outcome.chosen_item[row]] if outcome.clicked[row] else []
        np.testing.assert_array_equal(after[row], np.concatenate([real, consumed]))


def test_reference_policies_fill_slates_with_distinct_unseen_items(
    truth: GroundTruth, sequences: UserSequences
) -> None:
    population = _population(truth, sequences, users=300)
    users = np.arange(population.num_users)
    histories = population.histories(users)
    for policy in (popularity_policy(truth, 10), oracle_policy(truth, population)):
        slates = policy(users, histories)
        assert slates.shape == (len(users), 10)
        for slate, history in zip(slates, histories, strict=True):
            assert len(set(slate.tolist())) == 10
            assert not np.isin(slate, history).any()
    random_slates = random_policy(truth.num_items, 10, seed=0)(users, histories)
    assert all(len(set(slate.tolist())) == 10 for slate in random_slates)
    assert random_slates.min() >= 1 and random_slates.max() <= truth.num_items


def test_each_arm_policy_is_called_once_a_day_with_its_own_users(truth: GroundTruth, sequences: UserSequences) -> None:
    population = _population(truth, sequences, users=400, pre_period_days=2)
    assignment = np.arange(population.num_users) % 2
    calls: list[tuple[str, np.ndarray]] = []

    def recording(name: str, policy: Policy) -> Policy:
        def wrapped(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
            calls.append((name, users))
            return policy(users, histories)

        return wrapped

    popular = popularity_policy(truth, 10)
    arms = {"control": recording("control", popular), "treatment": recording("treatment", popular)}
    summary = simulate(population, arms, assignment, days=4, pre_policy=recording("pre", popular))
    assert [name for name, _ in calls] == ["pre"] * 2 + ["control", "treatment"] * 4
    assert all((assignment[users] == ["control", "treatment"].index(name)).all() for name, users in calls[2:])
    assert summary.experiment.visits.shape == (400, 4) and summary.pre is not None


def test_event_log_round_trips_through_parquet(truth: GroundTruth, sequences: UserSequences, tmp_path: Path) -> None:
    population = _population(truth, sequences, users=300, days=4, pre_period_days=2)
    streamed_path = tmp_path / "streamed.parquet"
    in_memory = EventLog(["only"])
    outcomes: list[DayOutcome] = []
    with EventLog(["only"], streamed_path) as streamed:
        assignment = np.zeros(population.num_users, dtype=np.int64)
        for day in range(-2, 4):
            users = population.active_today(day)
            outcome = population.step(day, users, random_policy(truth.num_items, 10, day + 2)(users, []))
            outcomes.append(outcome)
            in_memory.record(outcome, assignment)
            streamed.record(outcome, assignment)
    in_memory.write(tmp_path / "memory.parquet")

    expected_rows = sum(int(o.impressions.sum()) + len(o.absent) for o in outcomes)
    for path in (streamed_path, tmp_path / "memory.parquet"):
        events = EventLog.read(path)
        assert len(events) == expected_rows == in_memory.num_rows
        assert int(events["chosen"].sum()) == sum(int(o.clicked.sum()) for o in outcomes)
        assert int((~events["returned"]).sum()) == sum(len(o.absent) for o in outcomes)
        assert sorted(events["day"].unique().tolist()) == list(range(-2, 4))
        assert set(events["arm"].astype(str)) == {"only"}
        consumed = events.loc[events["chosen"], "consumption"].to_numpy()
        assert np.allclose(consumed.sum(), sum(float(o.consumption.sum()) for o in outcomes), rtol=1e-5)
        assert (events.loc[events["returned"] & ~events["chosen"], "consumption"] == 0).all()
        assert events.loc[~events["returned"], "consumption"].isna().all()


def test_config_rejects_unknown_and_invalid_settings() -> None:
    with pytest.raises(ValidationError):
        PopulationConfig(users=10, fatigue=1.0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        PopulationConfig(satisfaction_decay=1.0)
