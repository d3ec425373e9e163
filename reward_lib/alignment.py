"""How well a reward predicts the north-star on simulated A/B logs.

A log is split at ``split_day``: the reward scores each user's events before it (the reward sees
only the past), the north-star is measured after it. Alignment is

- ``retention``: Spearman correlation, over users, of the mean reward per early event with the
  share of later days the user came back;
- ``satisfaction``: the same with the mean satisfaction of the user's later visits;
- ``arm_agreement``: over every pair of arms, the share ordered the same way by the mean reward
  per user and by later retention (which arm wins; a tie counts half);

and their weighted sum, the ``score`` tuning maximises. Functions here are pure: arrays and frozen
dataclasses in, frozen dataclasses out; reading logs is :mod:`reward_lib.logs`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from recsys.event_table import from_experiment_log, shown
from reward_lib.errors import RewardError
from reward_lib.rewards import Reward
from reward_lib.spec import DEFAULT_OBJECTIVE, OBJECTIVE_METRICS
from reward_lib.validate import evaluate

TIE_DECIMALS = 9


@dataclass(frozen=True)
class AlignmentData:
    """One A/B log, ready for alignment.

    Args:
        name: the log's name in reports.
        events: the event table of the early impressions (``E`` rows), which rewards score.
        event_user: ``E`` dense user index of each event.
        user_arm: ``U`` arm index of each user.
        arms: arm names.
        future_retention: ``U`` share of the later days on which the user came back.
        future_satisfaction: ``U`` mean satisfaction of the user's later visits (NaN: none).
        split_day: first later day; early days are ``0 .. split_day - 1``.
        days: experiment days in the log.
    """

    name: str
    events: pd.DataFrame
    event_user: np.ndarray
    user_arm: np.ndarray
    arms: tuple[str, ...]
    future_retention: np.ndarray
    future_satisfaction: np.ndarray
    split_day: int
    days: int

    @property
    def users(self) -> int:
        return len(self.user_arm)


def prepare_log(
    log: pd.DataFrame, name: str, items: pd.DataFrame | None = None, split_day: int | None = None
) -> AlignmentData:
    """Split an A/B event log (``recsys.event_log`` columns) at ``split_day`` (default: half the
    experiment's days); pre-period days (negative) only tell who the users are."""
    days = int(log["day"].max()) + 1 if len(log) else 0
    split = days // 2 if split_day is None else split_day
    if not 0 < split < days:
        raise RewardError(f"{name}: the log has {days} experiment days; alignment needs an early and a later part "
                          f"(split day {split} must be in 1..{days - 1})")  # fmt: skip
    user_codes, user_ids = pd.factorize(log["user"].to_numpy())
    arm = log["arm"].astype("category")
    user_arm = np.zeros(len(user_ids), dtype=np.int64)
    user_arm[user_codes] = arm.cat.codes.to_numpy()
    visits = shown(log).drop_duplicates(["user", "day"])
    visit_user = pd.Index(user_ids).get_indexer(visits["user"].to_numpy())
    later = visits["day"].to_numpy() >= split
    retention = np.bincount(visit_user[later], minlength=len(user_ids)) / (days - split)
    total = np.bincount(visit_user[later], weights=visits["satisfaction"].to_numpy(np.float64)[later],
                        minlength=len(user_ids))  # fmt: skip
    count = np.bincount(visit_user[later], minlength=len(user_ids))
    early = log[(log["day"].to_numpy() >= 0) & (log["day"].to_numpy() < split)]
    events = from_experiment_log(early, items)
    return AlignmentData(
        name=name,
        events=events,
        event_user=pd.Index(user_ids).get_indexer(events["user"].to_numpy()),
        user_arm=user_arm,
        arms=tuple(str(a) for a in arm.cat.categories),
        future_retention=retention,
        future_satisfaction=np.where(count > 0, total / np.maximum(count, 1), np.nan),
        split_day=split,
        days=days,
    )


def per_user_mean(values: np.ndarray, data: AlignmentData) -> np.ndarray:
    """``U`` (or ``U X C`` for ``E X C`` values) mean per early event of each user; NaN without events."""
    counts = np.bincount(data.event_user, minlength=data.users).astype(np.float64)
    matrix = values.reshape(len(values), -1)
    sums = np.column_stack(
        [np.bincount(data.event_user, weights=matrix[:, c], minlength=data.users) for c in range(matrix.shape[1])]
    )
    with np.errstate(invalid="ignore"):
        means = sums / counts[:, None]
    return means if values.ndim == 2 else means[:, 0]


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    """Correlation over users with both values, and their number; NaN when it is undefined."""
    both = np.isfinite(x) & np.isfinite(y)
    if both.sum() < 3 or np.ptp(x[both]) == 0 or np.ptp(y[both]) == 0:
        return float("nan"), int(both.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(spearmanr(x[both], y[both]).statistic), int(both.sum())


@dataclass(frozen=True)
class LogAlignment:
    """Alignment on one log; ``reward_winner`` and ``north_star_winner`` are the top arms by each."""

    name: str
    users: int
    retention: float
    satisfaction: float
    arm_agreement: float
    arm_pairs: int
    reward_by_arm: dict[str, float]
    retention_by_arm: dict[str, float]

    @property
    def reward_winner(self) -> str | None:
        return max(self.reward_by_arm, key=lambda arm: self.reward_by_arm[arm], default=None)

    @property
    def north_star_winner(self) -> str | None:
        return max(self.retention_by_arm, key=lambda arm: self.retention_by_arm[arm], default=None)


def align(user_reward: np.ndarray, data: AlignmentData) -> LogAlignment:
    """Alignment of ``U`` per-user rewards (from :func:`per_user_mean`) with the log's north-star.

    Rewards are rounded to ``TIE_DECIMALS`` first: users whose rewards differ by floating-point noise
    alone (summed in another order) are ties, so the ranks do not depend on how the sum was taken.
    """
    user_reward = np.round(user_reward, TIE_DECIMALS)
    retention, users = _spearman(user_reward, data.future_retention)
    satisfaction, _ = _spearman(user_reward, data.future_satisfaction)
    reward_by_arm, retention_by_arm = {}, {}
    for index, arm in enumerate(data.arms):
        members = data.user_arm == index
        scored = members & np.isfinite(user_reward)
        if scored.any():
            reward_by_arm[arm] = float(user_reward[scored].mean())
            retention_by_arm[arm] = float(data.future_retention[members].mean())
    pairs = list(itertools.combinations(reward_by_arm, 2))
    agreement = [
        0.5 if by_reward == 0 or by_retention == 0 else float(by_reward == by_retention)
        for a, b in pairs
        for by_reward, by_retention in [(np.sign(reward_by_arm[a] - reward_by_arm[b]),
                                         np.sign(retention_by_arm[a] - retention_by_arm[b]))]
    ]  # fmt: skip
    return LogAlignment(
        data.name, users, retention, satisfaction, float(np.mean(agreement)) if pairs else float("nan"), len(pairs),
        reward_by_arm, retention_by_arm,
    )  # fmt: skip


@dataclass(frozen=True)
class Alignment:
    """Alignment over several logs: correlations weighted by users, agreement by arm pairs."""

    logs: tuple[LogAlignment, ...]
    objective: Mapping[str, float]

    def _pooled(self, metric: str, weight: str) -> float:
        pairs = [(getattr(log, metric), getattr(log, weight)) for log in self.logs]
        pairs = [(value, w) for value, w in pairs if np.isfinite(value) and w > 0]
        total = sum(w for _, w in pairs)
        return sum(value * w for value, w in pairs) / total if total else float("nan")

    @property
    def retention(self) -> float:
        return self._pooled("retention", "users")

    @property
    def satisfaction(self) -> float:
        return self._pooled("satisfaction", "users")

    @property
    def arm_agreement(self) -> float:
        return self._pooled("arm_agreement", "arm_pairs")

    def metric(self, name: str) -> float:
        return self.score if name == "alignment" else float(getattr(self, name))

    @property
    def score(self) -> float:
        """The objective: weighted mean of the metrics, an undefined one counting as 0 (no evidence)."""
        total = sum(self.objective.values())
        return sum(weight * float(np.nan_to_num(self.metric(m))) for m, weight in self.objective.items()) / total

    def to_json(self) -> dict[str, object]:
        return {
            "alignment": self.score,
            **{metric: self.metric(metric) for metric in OBJECTIVE_METRICS},
            "objective": dict(self.objective),
            "logs": [
                {**{k: getattr(log, k) for k in ("name", "users", *OBJECTIVE_METRICS, "arm_pairs", "reward_by_arm",
                                                  "retention_by_arm")},
                 "reward_winner": log.reward_winner, "north_star_winner": log.north_star_winner}
                for log in self.logs
            ],
        }  # fmt: skip


def measure(reward: Reward, logs: Sequence[AlignmentData], objective: Mapping[str, float] | None = None) -> Alignment:
    """``reward``'s alignment on ``logs``; its values are validated first (columns, finite, bounds).

    The objective defaults to the spec's ``tuning.objective`` (retention and satisfaction, half each).
    """
    chosen = objective or (reward.spec.tuning.objective if reward.spec is not None else DEFAULT_OBJECTIVE)
    return Alignment(tuple(align(per_user_mean(evaluate(reward, d.events), d), d) for d in logs), dict(chosen))
