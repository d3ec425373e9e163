"""A seeded population of simulated users who come back day after day, choose, tire and leave.

Each simulated user is drawn from a real user of the prepared data: their taste is that user's
ground-truth vector plus noise, their activity follows the real user's interaction count, and their
history starts as the real user's items, so any candidate can score them. A day of an experiment is

    users = population.active_today(day)
    slates = policy(users, population.histories(users))
    outcome = population.step(day, users, slates)

Returning follows KuaiSim's retention idea: the chance to come back grows with recent satisfaction.
Choice is a multinomial logit over the slate and the option of taking nothing, on the world model's
log-odds of each item being the user's next choice (``GroundTruth``: taste and recent items), less
fatigue. Everything is
vectorised over users (only days loop in Python), and every random draw comes from a generator
seeded by (seed, purpose, day) over the whole population, so two policies run on the same seed face
the same dice: their differences are the policies', not the noise's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy.special import expit

from ab_testing.ground_truth import GroundTruth
from recsys.event_log import NO_CHOICE, DayOutcome, EventLog
from recsys.sequences import UserSequences

Policy = Callable[[np.ndarray, list[np.ndarray]], np.ndarray]
"""A recommender under test: ``A`` user ids and their histories -> ``A X slate_size`` item indices."""

SAMPLE_STREAM, RETURN_STREAM, CHOICE_STREAM = 0, 1, 2  # independent random streams per purpose
DAY_OFFSET = 1 << 20  # seeds need non-negative entropy; pre-period days are negative
RANKING_HEADROOM = 256  # ranked items past the slate that a shared ranking looks at before falling back
POLICY_CHUNK = 2048  # users scored together by the reference policies (bounds a chunk X N score block)
RETENTION_DAYS = (7, 14)  # "retained on day d": came back on day d of the experiment or later


class PopulationConfig(BaseModel):
    """How the simulated users behave. Utilities are in logits (see ``GroundTruth``).

    The return and leaving defaults were set on ML-1M for a static taste model; with the world
    model they still spread the reference policies apart: over 14 days on ML-1M random slates lose
    52% of users, popularity 15%, SASRec (full CE) 1% (``benchmarks/results/simulator_fidelity.json``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    users: int = Field(default=100_000, ge=1, description="simulated users")
    days: int = Field(default=30, ge=1, description="days of the experiment")
    slate_size: int = Field(default=10, ge=1, description="items shown per visit")
    seed: int = Field(default=0, ge=0, description="seeds who is drawn and every daily draw")
    taste_noise: float = Field(
        default=0.3,
        ge=0.0,
        description="spread of the noise added to the real user's taste, as a share of that user's own "
        "utility spread over the catalogue (0: a clone of the real user)",
    )
    no_choice_utility: float = Field(
        default=2.0, description="utility of taking nothing: slates worse than this are mostly passed over"
    )
    no_choice_satisfaction: float = Field(
        default=-0.5, description="satisfaction of a visit where nothing was taken (a small disappointment)"
    )
    position_bias: float = Field(
        default=0.1, ge=0.0, description="logits lost per slate position in the choice (not in satisfaction)"
    )
    activity_weight: float = Field(
        default=0.5,
        ge=0.0,
        description="return logit per standard deviation of the real user's log interaction count",
    )
    return_base: float = Field(default=-1.5, description="return logit of an average user whose satisfaction EMA is 0")
    return_satisfaction_weight: float = Field(
        default=0.5, ge=0.0, description="return logit per unit of the satisfaction EMA"
    )
    satisfaction_decay: float = Field(
        default=0.7, ge=0.0, lt=1.0, description="EMA weight of the past: mood = decay * mood + (1 - decay) * visit"
    )
    initial_satisfaction: float = Field(
        default=2.0, description="satisfaction EMA before the first simulated visit (the mood users arrive with)"
    )
    fatigue_repeat: float = Field(
        default=2.0, ge=0.0, description="utility lost by an item the user has already consumed"
    )
    fatigue_similarity: float = Field(
        default=1.0,
        ge=0.0,
        description="utility lost per unit of mean genre cosine similarity with the last consumed items",
    )
    fatigue_window: int = Field(default=5, ge=1, description="last consumed items that similarity fatigue looks at")
    leave_threshold: float = Field(
        default=1.0, description="a visit with the satisfaction EMA below this counts towards leaving"
    )
    patience: float = Field(
        default=3.0,
        ge=1.0,
        description="mean number of consecutive low visits a user bears before leaving for good "
        "(per user: 1 + Poisson(patience - 1))",
    )
    pre_period_days: int = Field(
        default=7, ge=0, description="days served by the control policy before the experiment (for CUPED)"
    )


@dataclass(frozen=True)
class _RealHistories:
    """The real users' time-ordered items (CSR, shared by every simulated user drawn from them).

    ``keys`` holds ``user * width + item`` sorted, for vectorised "has this user consumed it" tests;
    ``recent`` the last ``window`` items of each user (0 pads the front of short histories).
    """

    items: np.ndarray
    offsets: np.ndarray
    keys: np.ndarray
    recent: np.ndarray
    width: int

    @classmethod
    def build(cls, sequences: UserSequences, window: int) -> _RealHistories:
        width = sequences.num_items + 1
        lengths = np.diff(sequences.offsets)
        owners = np.repeat(np.arange(sequences.num_users), lengths)
        keys = np.sort(owners * width + sequences.items)
        tail = sequences.offsets[1:, None] - window + np.arange(window)
        valid = tail >= sequences.offsets[:-1, None]
        recent = np.where(valid, sequences.items[np.maximum(tail, 0)], 0)
        return cls(sequences.items, sequences.offsets, keys, recent, width)


class Population:
    """Simulated users and their state: mood (satisfaction EMA), consumption, who has left.

    Build one with ``Population.sample``. ``latent`` (``P X F``) is each user's true taste, readable
    by oracle policies and reports; policies under test only get ids and histories. A history
    starts with the real user's whole sequence (every split: the simulated user lives after the
    data ends); consumed items are kept in a ``P X capacity`` tail that doubles when full.
    """

    def __init__(
        self,
        ground_truth: GroundTruth,
        config: PopulationConfig,
        source_user: np.ndarray,
        latent: np.ndarray,
        activity: np.ndarray,
        patience: np.ndarray,
        real: _RealHistories,
    ) -> None:
        self.ground_truth = ground_truth
        self.config = config
        self.source_user = source_user
        self.latent = latent
        self.activity = activity
        self.patience = patience
        self._real = real
        size = len(source_user)
        self.satisfaction_ema = np.full(size, config.initial_satisfaction)
        self.left = np.zeros(size, dtype=bool)
        self._low_streak = np.zeros(size, dtype=np.int64)
        self._consumed = np.zeros((size, config.pre_period_days + config.days), dtype=np.int64)
        self._consumed_count = np.zeros(size, dtype=np.int64)
        self._recent = real.recent[source_user]
        self._log_normaliser = ground_truth.user_log_normalisers[source_user]
        self._last_day: int | None = None

    @classmethod
    def sample(cls, ground_truth: GroundTruth, sequences: UserSequences, config: PopulationConfig) -> Population:
        """Draw ``config.users`` simulated users (seeded) from the real users of ``sequences``."""
        if (sequences.num_users, sequences.num_items) != (ground_truth.num_users, ground_truth.num_items):
            raise ValueError(
                f"sequences have {sequences.num_users} users and {sequences.num_items} items but the ground "
                f"truth {ground_truth.num_users} and {ground_truth.num_items}: use the same prepared dataset"
            )
        rng = np.random.default_rng([config.seed, SAMPLE_STREAM])
        source = rng.integers(0, sequences.num_users, config.users)
        taste = ground_truth.user_factors[source]
        noise = _noise_scale(ground_truth, config.taste_noise)[source, None] * rng.standard_normal(taste.shape)
        log_counts = np.log1p(np.diff(sequences.offsets))
        activity = (log_counts - log_counts.mean()) / max(float(log_counts.std()), 1e-8)
        patience = 1 + rng.poisson(config.patience - 1.0, config.users)
        real = _RealHistories.build(sequences, max(config.fatigue_window, ground_truth.window))
        latent = (taste + noise).astype(np.float32)
        return cls(ground_truth, config, source, latent, config.activity_weight * activity[source], patience, real)

    @property
    def num_users(self) -> int:
        return len(self.source_user)

    def return_probability(self) -> np.ndarray:
        """``P`` chance of each user coming back today (0 once left)."""
        cfg = self.config
        logit = cfg.return_base + self.activity + cfg.return_satisfaction_weight * self.satisfaction_ema
        return np.where(self.left, 0.0, expit(logit))

    def active_today(self, day: int) -> np.ndarray:
        """Ids of the users who come back on ``day`` (ascending; seeded by the day)."""
        draw = self._rng(day, RETURN_STREAM).random(self.num_users)
        return np.flatnonzero(draw < self.return_probability())

    def recent(self, users: np.ndarray) -> np.ndarray:
        """``A X W`` each user's last consumed items, newest last (0 pads): what their next choice depends on."""
        return self._recent[users]

    def histories(self, users: np.ndarray) -> list[np.ndarray]:
        """Each user's time-ordered items: the real user's, then what the simulated user consumed."""
        if len(users) == 0:
            return []
        real = self._real
        starts = real.offsets[self.source_user[users]]
        real_lengths = real.offsets[self.source_user[users] + 1] - starts
        lengths = real_lengths + self._consumed_count[users]
        ends = np.cumsum(lengths)
        row = np.repeat(np.arange(len(users)), lengths)
        position = np.arange(ends[-1]) - (ends - lengths)[row]
        from_real = position < real_lengths[row]
        flat = np.empty(len(row), dtype=np.int64)
        flat[from_real] = real.items[starts[row[from_real]] + position[from_real]]
        tail = ~from_real
        flat[tail] = self._consumed[users[row[tail]], position[tail] - real_lengths[row[tail]]]
        return np.split(flat, ends[:-1])

    def step(self, day: int, users: np.ndarray, slates: np.ndarray) -> DayOutcome:
        """Let ``users`` (distinct, still present) choose from ``slates`` (``A X slate_size``, 0 = empty slot).

        The choice is a multinomial logit over the shown items and taking nothing, with item utility
        = the world model's log-odds of choosing it next given the user's taste and recent items
        (``GroundTruth.utility``) - position bias - fatigue. A chosen item is consumed with satisfaction =
        affinity - fatigue (position bias sways attention, not enjoyment) and a consumed share of
        ``sigmoid(satisfaction)``; taking nothing gives ``no_choice_satisfaction``. The mood (EMA)
        moves, and a user whose mood stayed below ``leave_threshold`` for ``patience`` visits in a
        row leaves for good.
        """
        self._check_step(day, users, slates)
        cfg = self.config
        present = ~self.left
        recent = self._recent[users]
        utility = self.ground_truth.utility(self.latent[users], recent, slates, self._log_normaliser[users])
        value = utility - self._fatigue(users, slates)
        logits = np.where(slates > 0, value - cfg.position_bias * np.arange(slates.shape[1]), -np.inf)
        logits = np.column_stack([logits, np.full(len(users), cfg.no_choice_utility)])
        noise = self._rng(day, CHOICE_STREAM).gumbel(size=(self.num_users, logits.shape[1]))[users]
        pick = np.argmax(logits + noise, axis=1)
        clicked = pick < slates.shape[1]
        rows = np.flatnonzero(clicked)
        satisfaction = np.full(len(users), cfg.no_choice_satisfaction)
        satisfaction[rows] = value[rows, pick[rows]]
        self._consume(users[rows], slates[rows, pick[rows]])
        left = self._update_mood(users, satisfaction)
        present[users] = False
        self._last_day = day
        return DayOutcome(
            day=day,
            users=users,
            slates=slates,
            chosen_position=np.where(clicked, pick, NO_CHOICE),
            satisfaction=satisfaction,
            consumption=np.where(clicked, expit(satisfaction), 0.0),
            left=left,
            absent=np.flatnonzero(present),
        )

    def _check_step(self, day: int, users: np.ndarray, slates: np.ndarray) -> None:
        if self._last_day is not None and day <= self._last_day:
            raise ValueError(f"day {day} comes after day {self._last_day}: days must increase")
        if slates.shape != (len(users), self.config.slate_size):
            raise ValueError(f"slates have shape {slates.shape}, expected ({len(users)}, {self.config.slate_size})")
        if len(slates) and (slates.min() < 0 or slates.max() > self.ground_truth.num_items):
            raise ValueError(f"slates hold items outside 0..{self.ground_truth.num_items}")
        if len(np.unique(users)) != len(users) or self.left[users].any():
            raise ValueError("users must be distinct and still in the population")

    def _fatigue(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """``A X K`` utility lost to items already consumed and to genres just consumed."""
        cfg = self.config
        return cfg.fatigue_repeat * self._consumed_before(users, slates) + cfg.fatigue_similarity * (
            self._recent_similarity(users, slates)
        )

    def _consumed_before(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """``A X K``: has the user consumed the item (in the real history or in the simulation)."""
        keys = self._real.keys
        query = self.source_user[users, None] * self._real.width + slates
        found = keys[np.minimum(np.searchsorted(keys, query), len(keys) - 1)] == query
        depth = int(self._consumed_count[users].max(initial=0))
        simulated = (self._consumed[users, :depth, None] == slates[:, None, :]).any(axis=1)
        return (found | simulated) & (slates > 0)

    def _recent_similarity(self, users: np.ndarray, slates: np.ndarray) -> np.ndarray:
        """``A X K`` mean genre cosine similarity of each item with the user's last consumed items."""
        genres = self.ground_truth.item_genres
        recent = self._recent[users, -self.config.fatigue_window :]
        total = np.einsum("akg,awg->ak", genres[slates], genres[recent])
        return total / np.maximum((recent > 0).sum(axis=1, keepdims=True), 1)

    def _consume(self, users: np.ndarray, items: np.ndarray) -> None:
        count = self._consumed_count[users]
        if len(count) and count.max() >= self._consumed.shape[1]:
            self._consumed = np.pad(self._consumed, ((0, 0), (0, self._consumed.shape[1])))
        self._consumed[users, count] = items
        self._consumed_count[users] += 1
        self._recent[users] = np.column_stack([self._recent[users, 1:], items])

    def _update_mood(self, users: np.ndarray, satisfaction: np.ndarray) -> np.ndarray:
        """Move the visitors' EMA; returns ``A`` booleans: who leaves for good after this visit."""
        decay = self.config.satisfaction_decay
        self.satisfaction_ema[users] = decay * self.satisfaction_ema[users] + (1.0 - decay) * satisfaction
        low = self.satisfaction_ema[users] < self.config.leave_threshold
        self._low_streak[users] = np.where(low, self._low_streak[users] + 1, 0)
        leaving = self._low_streak[users] >= self.patience[users]
        self.left[users[leaving]] = True
        return leaving

    def _rng(self, day: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, stream, day + DAY_OFFSET])


def _noise_scale(ground_truth: GroundTruth, share: float) -> np.ndarray:
    """``U`` per-coordinate noise std giving each real user's utilities ``share`` of their own spread.

    Isotropic noise of std s moves utilities over the catalogue by about ``s * sqrt(trace Cov(y))``,
    and the user's own spread is ``sqrt(x^T Cov(y) x)``.
    """
    items = ground_truth.item_factors[1:].astype(np.float64)
    covariance = np.atleast_2d(np.cov(items, rowvar=False, bias=True))
    own = np.einsum("uf,fg,ug->u", ground_truth.user_factors, covariance, ground_truth.user_factors)
    return share * np.sqrt(np.maximum(own, 0.0) / max(float(np.trace(covariance)), 1e-12))


def top_unseen(
    users: np.ndarray, histories: Sequence[np.ndarray], k: int, scores: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``A X k`` best-scored items per user, best first, skipping item 0 and the user's history.

    ``scores(user_chunk)`` returns ``chunk X (N+1)`` scores; users go in chunks to bound memory.
    A user with fewer than ``k`` unseen items gets seen items (or empty slots) at the end.
    """
    slates = np.empty((len(users), k), dtype=np.int64)
    for start in range(0, len(users), POLICY_CHUNK):
        chunk = slice(start, start + POLICY_CHUNK)
        block = np.array(scores(users[chunk]), dtype=np.float64)
        seen = histories[chunk]
        block[np.repeat(np.arange(len(seen)), [len(h) for h in seen]), np.concatenate(seen)] = -np.inf
        block[:, 0] = -np.inf
        best = np.argpartition(block, block.shape[1] - k, axis=1)[:, -k:]
        order = np.argsort(-np.take_along_axis(block, best, axis=1), axis=1, kind="stable")
        slates[chunk] = np.take_along_axis(best, order, axis=1)
    return slates


def first_unseen(ranking: np.ndarray, users: np.ndarray, histories: Sequence[np.ndarray], k: int) -> np.ndarray:
    """``A X k``: the first ``k`` items of one shared ``ranking`` (best first) each user has not consumed.

    Looks only at the top ``k + RANKING_HEADROOM`` of the ranking, which is all but a few heavy users
    need; those few fall back to ``top_unseen`` over the whole ranking.
    """
    window = min(len(ranking), k + RANKING_HEADROOM)
    consumed = np.concatenate([*histories, np.zeros(0, dtype=np.int64)])
    rank_of = np.full(max(ranking.max(initial=0), consumed.max(initial=0)) + 1, window)
    rank_of[ranking[:window]] = np.arange(window)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    ranks = rank_of[consumed]
    seen = np.zeros((len(histories), window + 1), dtype=bool)
    seen[rows, ranks] = True  # column ``window`` collects items outside the window
    seen = seen[:, :window]
    slates = ranking[np.argsort(seen, axis=1, kind="stable")[:, :k]]
    short = np.flatnonzero(window - seen.sum(axis=1) < k)
    if len(short):
        scores = np.full(len(rank_of), -np.inf)
        scores[ranking] = -np.arange(len(ranking), dtype=np.float64)

        def shared(chunk: np.ndarray) -> np.ndarray:
            return np.broadcast_to(scores, (len(chunk), len(scores)))

        slates[short] = top_unseen(users[short], [histories[i] for i in short.tolist()], k, shared)
    return slates


def popularity_policy(ground_truth: GroundTruth, slate_size: int) -> Policy:
    """The most consumed items the user has not consumed yet: a baseline every model should beat."""
    ranking = 1 + np.argsort(-ground_truth.item_popularity[1:], kind="stable")

    def policy(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return first_unseen(ranking, users, histories, slate_size)

    return policy


def oracle_policy(ground_truth: GroundTruth, population: Population) -> Policy:
    """The items the user is likeliest to choose next that they have not consumed: a ceiling no model can see."""

    def policy(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        return top_unseen(
            users,
            histories,
            population.config.slate_size,
            lambda chunk: ground_truth.choice_logits(population.latent[chunk], population.recent(chunk)),
        )

    return policy


def random_policy(num_items: int, slate_size: int, seed: int) -> Policy:
    """Distinct items drawn uniformly (seeded): the floor of the reference policies."""
    if slate_size > num_items:
        raise ValueError(f"a slate of {slate_size} distinct items needs at least as many items, not {num_items}")
    rng = np.random.default_rng(seed)

    def policy(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        slates = rng.integers(1, num_items + 1, (len(users), slate_size))
        while True:
            ordered = np.sort(slates, axis=1)
            repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1)
            if not repeated.any():
                return slates
            slates[repeated] = rng.integers(1, num_items + 1, (int(repeated.sum()), slate_size))

    return policy


@dataclass(frozen=True)
class PeriodMetrics:
    """Per-user metrics of a period (the experiment, or the pre-period used by CUPED).

    Args:
        visits: ``P X D`` the user came back on each day of the period.
        clicks: ``P`` visits where an item was taken.
        impressions: ``P`` items shown.
        consumption: ``P`` summed share of the chosen items consumed.
        satisfaction: ``P`` summed satisfaction of the visits.
        left: ``P`` the user had left for good by the end of the period.
    """

    visits: np.ndarray
    clicks: np.ndarray
    impressions: np.ndarray
    consumption: np.ndarray
    satisfaction: np.ndarray
    left: np.ndarray

    @property
    def active_days(self) -> np.ndarray:
        return self.visits.sum(axis=1)

    def retained(self, day: int) -> np.ndarray:
        """``P`` came back on ``day`` of the period or later (False when the period is shorter)."""
        return np.any(self.visits[:, day:], axis=1)

    @property
    def mean_satisfaction(self) -> np.ndarray:
        """``P`` satisfaction per visit; NaN for users who never came (the ratio's denominator is 0)."""
        days = self.active_days
        return np.where(days > 0, self.satisfaction / np.maximum(days, 1), np.nan)

    def columns(self) -> dict[str, np.ndarray]:
        """Every per-user metric by name, retention included."""
        return {
            "active_days": self.active_days,
            **{f"retained_d{day}": self.retained(day) for day in RETENTION_DAYS},
            "mean_satisfaction": self.mean_satisfaction,
            "satisfaction": self.satisfaction,
            "clicks": self.clicks,
            "impressions": self.impressions,
            "consumption": self.consumption,
            "left": self.left,
        }


@dataclass(frozen=True)
class SimulationSummary:
    """What ``simulate`` measured: per-user metrics of the experiment and of the pre-period.

    ``assignment[u]`` indexes ``arms``; ``pre`` is None without a pre-period.
    """

    arms: tuple[str, ...]
    assignment: np.ndarray
    experiment: PeriodMetrics
    pre: PeriodMetrics | None

    def to_frame(self) -> pd.DataFrame:
        """One row per user: arm, the experiment's metrics, and the pre-period's as ``pre_*``."""
        columns: dict[str, object] = {"arm": pd.Categorical.from_codes(self.assignment, self.arms)}
        columns.update(self.experiment.columns())
        if self.pre is not None:
            columns.update({f"pre_{name}": values for name, values in self.pre.columns().items()})
        return pd.DataFrame(columns)


class _Tally:
    """Running per-user sums of a period, frozen into ``PeriodMetrics`` at its end."""

    def __init__(self, users: int, days: int) -> None:
        self.visits = np.zeros((users, days), dtype=bool)
        self.clicks = np.zeros(users, dtype=np.int64)
        self.impressions = np.zeros(users, dtype=np.int64)
        self.consumption = np.zeros(users)
        self.satisfaction = np.zeros(users)

    def add(self, column: int, outcome: DayOutcome) -> None:
        users = outcome.users
        self.visits[users, column] = True
        self.clicks[users] += outcome.clicked
        self.impressions[users] += outcome.impressions
        self.consumption[users] += outcome.consumption
        self.satisfaction[users] += outcome.satisfaction

    def freeze(self, left: np.ndarray) -> PeriodMetrics:
        return PeriodMetrics(self.visits, self.clicks, self.impressions, self.consumption, self.satisfaction, left)


def simulate(
    population: Population,
    policy_by_arm: dict[str, Policy],
    assignment: np.ndarray,
    days: int | None = None,
    log: EventLog | None = None,
    pre_policy: Policy | None = None,
) -> SimulationSummary:
    """Run the pre-period (``pre_policy`` for everyone, by default the first arm's: the control),
    then ``days`` (default ``config.days``) with each user served by their arm's policy.

    Pre-period days are numbered ``-pre_period_days .. -1`` and the experiment's from 0. Each policy
    is called once a day with all of its active users. ``log`` receives every day of both periods.
    """
    arms = tuple(policy_by_arm)
    if (
        assignment.shape != (population.num_users,)
        or assignment.min(initial=0) < 0
        or assignment.max(initial=0) >= len(arms)
    ):
        raise ValueError(f"assignment needs one arm index in 0..{len(arms) - 1} per user ({population.num_users})")
    policies = list(policy_by_arm.values())
    pre_days = population.config.pre_period_days
    pre = None
    if pre_days:
        control = [pre_policy or policies[0]]
        everyone = np.zeros(population.num_users, dtype=np.int64)
        pre = _run_period(population, control, everyone, range(-pre_days, 0), log, assignment)
    length = population.config.days if days is None else days
    experiment = _run_period(population, policies, assignment, range(length), log, assignment)
    return SimulationSummary(arms, assignment, experiment, pre)


def _run_period(
    population: Population,
    policies: list[Policy],
    routing: np.ndarray,
    days: range,
    log: EventLog | None,
    assignment: np.ndarray,
) -> PeriodMetrics:
    """Simulate ``days``, serving each user by ``policies[routing[user]]``."""
    tally = _Tally(population.num_users, len(days))
    for column, day in enumerate(days):
        users = population.active_today(day)
        outcome = population.step(day, users, _serve(population, policies, routing, users))
        tally.add(column, outcome)
        if log is not None:
            log.record(outcome, assignment)
    return tally.freeze(population.left.copy())


def _serve(population: Population, policies: list[Policy], routing: np.ndarray, users: np.ndarray) -> np.ndarray:
    """``A X K`` slates: one batched call per policy with all of its users."""
    size = population.config.slate_size
    slates = np.zeros((len(users), size), dtype=np.int64)
    for index, policy in enumerate(policies):
        rows = np.flatnonzero(routing[users] == index)
        if len(rows) == 0:
            continue
        served = np.asarray(policy(users[rows], population.histories(users[rows])))
        if served.shape != (len(rows), size):
            raise ValueError(f"policy {index} returned slates of shape {served.shape}, expected ({len(rows)}, {size})")
        slates[rows] = served
    return slates
