"""Team-draft interleaving (Radlinski, Kurup and Joachims, CIKM 2008): a cheap pre-screen before an A/B test.

Each sampled simulated user is shown one slate that merges the production and the candidate
rankings: slot by slot, the team with fewer picks so far (a coin decides ties) adds its best item
not yet on the slate, and the slot remembers its team. The users choose from the merged slate with
the population's own choice model (:meth:`Population.step`), and a click is credited to the team
whose item was taken. A user who took more of the candidate's items is a win, more of production's
a loss, neither a tie; the candidate's preference share is wins / (wins + losses), tested against
one half with an exact binomial (sign) test. Interleaving tells which ranking users prefer from far
fewer users than an A/B test, but nothing of retention: it screens, the A/B test decides.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ab_testing.population import Policy, Population

PRODUCTION, CANDIDATE, NO_TEAM = 0, 1, -1  # the team of a slot (NO_TEAM: an empty slot)
COIN_STREAM = 3  # the coin flips' random stream, apart from the population's own streams


@dataclass(frozen=True)
class TeamDraft:
    """Interleaved slates and who contributed each slot.

    Args:
        slates: ``A X K`` item indices (0: an empty slot, when both rankings ran out).
        teams: ``A X K`` ``PRODUCTION`` or ``CANDIDATE`` per slot, ``NO_TEAM`` for an empty one.
    """

    slates: np.ndarray
    teams: np.ndarray


def team_draft(production: np.ndarray, candidate: np.ndarray, rng: np.random.Generator) -> TeamDraft:
    """Merge two ``A X K`` rankings (best first, 0: empty) into ``A X K`` slates, for all users at once.

    With at least ``K`` distinct items in each ranking, the teams' sizes differ by at most one; a
    team whose ranking has run out leaves its turn to the other.
    """
    if production.shape != candidate.shape:
        raise ValueError(f"the rankings differ in shape: {production.shape} and {candidate.shape}")
    users, size = production.shape
    rankings = np.stack([production, candidate])  # 2 X A X K
    rows = np.arange(users)
    slates = np.zeros((users, size), dtype=np.int64)
    teams = np.full((users, size), NO_TEAM)
    picks = np.zeros((2, users), dtype=np.int64)
    coins = rng.integers(0, 2, (users, size))
    for slot in range(size):
        taken = (rankings[..., None] == slates[None, :, None, :slot]).any(axis=-1) | (rankings == 0)  # 2 X A X K
        free = ~taken.all(axis=-1)  # 2 X A: the team still has an item to add
        turn = np.where(picks[PRODUCTION] == picks[CANDIDATE], coins[:, slot], picks[CANDIDATE] < picks[PRODUCTION])
        team = np.where(free[turn, rows], turn, 1 - turn)
        filled = free[team, rows]
        best = np.argmax(~taken, axis=-1)[team, rows]  # the team's first item not on the slate yet
        slates[filled, slot] = rankings[team, rows, best][filled]
        teams[filled, slot] = team[filled]
        np.add.at(picks, (team[filled], rows[filled]), 1)
    return TeamDraft(slates, teams)


@dataclass(frozen=True)
class InterleavingResult:
    """Who the users preferred, and whether the preference is significant at ``alpha``.

    ``share`` is the candidate's preference share wins / (wins + losses) with its exact
    (Clopper-Pearson) confidence interval; ``p_value`` is the two-sided sign test of share = 1/2.
    """

    users: int
    wins: int
    losses: int
    ties: int
    share: float
    ci_low: float
    ci_high: float
    p_value: float
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha

    @property
    def candidate_loses(self) -> bool:
        """Users significantly prefer production's items: the candidate need not spend an A/B test."""
        return self.significant and self.share < 0.5

    def summary(self) -> str:
        return (
            f"team-draft interleaving with {self.users} simulated users: {self.wins} preferred the candidate, "
            f"{self.losses} production, {self.ties} neither; candidate preference share {self.share:.3f} "
            f"({1 - self.alpha:.0%} CI {self.ci_low:.3f} .. {self.ci_high:.3f}), sign test p={self.p_value:.3g}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "significant": self.significant, "candidate_loses": self.candidate_loses,
                "summary": self.summary()}  # fmt: skip


def preference_test(candidate_clicks: np.ndarray, production_clicks: np.ndarray, alpha: float) -> InterleavingResult:
    """Per user, more clicks on the candidate's items is a win and fewer a loss; a sign test of wins against losses."""
    wins = int((candidate_clicks > production_clicks).sum())
    losses = int((candidate_clicks < production_clicks).sum())
    users = len(candidate_clicks)
    if wins + losses == 0:  # no user preferred either: no evidence, not an error
        return InterleavingResult(users, 0, 0, users, 0.5, 0.0, 1.0, 1.0, alpha)
    test = binomtest(wins, wins + losses, 0.5)
    interval = test.proportion_ci(confidence_level=1 - alpha)
    return InterleavingResult(users, wins, losses, users - wins - losses, wins / (wins + losses),
                              float(interval.low), float(interval.high), float(test.pvalue), alpha)  # fmt: skip


def interleave(
    population: Population, production: Policy, candidate: Policy, alpha: float = 0.05
) -> InterleavingResult:
    """Show every user of a fresh ``population`` one team-draft slate of the two policies and test who wins.

    The coin flips are seeded by the population's seed, so a run is reproducible.
    """
    users = np.arange(population.num_users)
    histories = population.histories(users)
    coins = np.random.default_rng([population.config.seed, COIN_STREAM])
    draft = team_draft(np.asarray(production(users, histories)), np.asarray(candidate(users, histories)), coins)
    outcome = population.step(0, users, draft.slates)
    clicked = np.flatnonzero(outcome.clicked)
    credit = np.zeros((2, population.num_users), dtype=np.int64)
    np.add.at(credit, (draft.teams[clicked, outcome.chosen_position[clicked]], users[clicked]), 1)
    return preference_test(credit[CANDIDATE], credit[PRODUCTION], alpha)
