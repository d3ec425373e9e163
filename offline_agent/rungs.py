"""Multi-fidelity selection: successive halving across rungs of training epochs on the full dataset.

Every candidate is trained first for ``epochs[0]`` epochs (rung 0; its fitness is the one proposals
are judged by, all at the same fidelity). The promotion rule, ASHA's: after each generation, a
candidate evaluated at rung r goes on to rung r+1 (its training resumed from its checkpoint up to
``epochs[r+1]``) when it ranks among the top ``floor(n * fraction)`` of the n candidates evaluated at
rung r so far, and only once ``n >= 1 / fraction``. A promotion is never undone.

Proxy fidelity: Kendall τ between rung r's fitness and rung r+1's over the candidates that reached
both. With at least ``tau_pairs`` pairs and τ below ``min_tau``, rung r ranks poorly what rung r+1
will say, so its fraction is doubled (capped at 1): more candidates get the longer training before
being judged. τ is measured on the promoted (the best) candidates only, so it is a conservative
estimate: ranking the top of a rung is harder than ranking all of it.

Our own scheduler on the program database, not Optuna's pruners: Optuna's
``SuccessiveHalvingPruner`` (the reference semantics, reduction factor ``1 / fraction``) decides
inside a live trial, which must keep running through every rung, and since it cannot pause a trial
it promotes the best of the first ``1 / fraction - 1`` trials outright. Here a training ends at each
rung and resumes from its checkpoint later, perhaps in another process (a pipeline task), so a
candidate waits in the database until enough rivals finished its rung; the state survives
``kill -9``; and the fraction follows τ, which a pruner's fixed reduction factor cannot.

When selection ends, the top ``finals`` of the highest rung reached are trained to convergence
(``final_epochs`` at most, early stopping on validation): the finals are rung ``len(epochs)``. The
best on validation at the highest rung is the run's result; its test metrics come from that one
evaluation and are never ranked on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy.stats import kendalltau

from offline_agent.program_db import RungResult


class RungConfig(BaseModel):
    """The rungs' training budgets, the promotion rule and the finals."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: tuple[int, ...] = Field(default=(2, 6, 18), description="the epoch cap of each rung, increasing")
    promote_fraction: float = Field(default=1 / 3, gt=0, le=1, description="the top share of a rung that goes on")
    min_tau: float = Field(default=0.5, ge=-1, le=1, description="below this τ a rung promotes twice the fraction")
    tau_pairs: int = Field(default=4, ge=2, description="candidates in both rungs before τ may change the fraction")
    finals: int = Field(default=3, ge=0, description="candidates of the highest rung trained to convergence")
    final_epochs: int = Field(default=200, ge=1, description="the finals' epoch cap; early stopping ends them sooner")

    @model_validator(mode="after")
    def _increasing(self) -> RungConfig:
        if not self.epochs or min(self.epochs) < 1:
            raise ValueError(f"rungs.epochs must list at least one epoch count, each >= 1, got {list(self.epochs)}")
        if any(low >= high for low, high in zip(self.epochs, self.epochs[1:], strict=False)):
            raise ValueError(f"rungs.epochs must increase strictly, e.g. [2, 6, 18], got {list(self.epochs)}")
        if self.finals and self.final_epochs <= self.epochs[-1]:
            raise ValueError(
                f"rungs.final_epochs ({self.final_epochs}) must exceed the top rung's {self.epochs[-1]} epochs: "
                "the finals train longer than any rung"
            )
        return self

    @property
    def final_rung(self) -> int:
        return len(self.epochs)


@dataclass(frozen=True)
class Fidelity:
    """How well rung ``lower`` predicts rung ``lower + 1``: Kendall τ over ``pairs`` candidates (None below 2
    pairs, or when one side is constant), and the fraction of rung ``lower`` promoted because of it."""

    lower: int
    tau: float | None
    pairs: int
    fraction: float

    def to_json(self) -> dict[str, float | int | None]:
        return {"lower": self.lower, "tau": self.tau, "pairs": self.pairs, "fraction": self.fraction}


def kendall_tau(lower: Sequence[float], upper: Sequence[float]) -> float | None:
    if len(lower) < 2:
        return None
    tau = float(kendalltau(lower, upper).statistic)
    return None if math.isnan(tau) else tau


def proxy_fidelity(results: Sequence[RungResult], config: RungConfig) -> list[Fidelity]:
    """τ for each pair of successive rungs, finals included (the last pair, which promotes nothing)."""
    fitness: dict[tuple[str, int], float] = {
        (r.content_hash, r.rung): r.fitness for r in results if r.fitness is not None
    }
    fidelity = []
    for lower in range(config.final_rung):
        both = [
            (f, fitness[h, lower + 1])
            for (h, rung), f in fitness.items()
            if rung == lower and (h, lower + 1) in fitness
        ]
        tau = kendall_tau([a for a, _ in both], [b for _, b in both])
        poor = tau is not None and len(both) >= config.tau_pairs and tau < config.min_tau
        fraction = min(2 * config.promote_fraction, 1.0) if poor else config.promote_fraction
        fidelity.append(Fidelity(lower, tau, len(both), fraction))
    return fidelity


def _ranked(results: Sequence[RungResult], rung: int) -> list[RungResult]:
    done = [r for r in results if r.rung == rung and r.status == "evaluated" and r.fitness is not None]
    return sorted(done, key=lambda r: (-(r.fitness or 0.0), r.created, r.content_hash))


def promotions(
    results: Sequence[RungResult], config: RungConfig, fidelity: Sequence[Fidelity]
) -> list[tuple[str, int]]:
    """``(content hash, rung)`` of every promotion now due under the rule of the module docstring."""
    reached = {(r.content_hash, r.rung) for r in results}
    due = []
    for rung in range(len(config.epochs) - 1):
        ranked = _ranked(results, rung)
        count = math.floor(len(ranked) * fidelity[rung].fraction + 1e-9)  # 0 until n >= 1 / fraction
        due += [(r.content_hash, rung + 1) for r in ranked[:count] if (r.content_hash, rung + 1) not in reached]
    return due


def finalists(results: Sequence[RungResult], config: RungConfig) -> list[str]:
    """The top ``finals`` content hashes of the highest rung reached (then the next rung down, if it holds fewer)."""
    chosen: list[str] = []
    for rung in reversed(range(len(config.epochs))):
        chosen += [r.content_hash for r in _ranked(results, rung) if r.content_hash not in chosen]
    return chosen[: config.finals]
