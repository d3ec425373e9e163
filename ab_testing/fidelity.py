"""How far an A/B verdict can be trusted: does the simulator rank models the way real users do?

Fidelity is the rank correlation (Spearman's ρ) between each north star the simulator gives a set
of reference policies and those policies' accuracy on real held-out events, together with how well
the simulated users themselves predict the real held-out next items. For a dataset it comes from
the latest ``benchmarks/simulator_fidelity.py`` result when that ran on it, else from a quick check
run on first use (cheap reference policies only) and cached beside the prepared data. Every A/B
report states it, and says plainly when the verdict rests on a simulator below the bar.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import BaseModel, ConfigDict, ValidationError
from scipy.stats import spearmanr

from ab_testing.ground_truth import FitSettings, GroundTruth, next_item_ndcg
from ab_testing.population import Policy, Population, PopulationConfig, first_unseen, random_policy, simulate
from recsys.data.prepared import PreparedDataset
from recsys.sequences import SPLIT_CODES, UserSequences

FIDELITY_BAR = 0.8  # Spearman ρ each gated north star must reach
GATED_NORTH_STARS = ("active_days", "satisfaction")
BENCHMARK_RESULT = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "simulator_fidelity.json"
CACHE_NAME = "simulator_fidelity.json"  # the quick check's result, beside the prepared data it measured
QUICK_USERS, QUICK_DAYS = 2000, 7
LIST_SIZE = 10


class SimulatorFidelity(BaseModel):
    """One fidelity measurement of the simulator on a dataset."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    source: str
    policies: int
    spearman: dict[str, float]
    world_model_test_ndcg10: float | None = None
    best_policy_test_ndcg10: float | None = None
    bar: float = FIDELITY_BAR

    @property
    def shortfalls(self) -> list[str]:
        """Why the simulator is below the bar (empty when it meets it)."""
        out = [
            f"Spearman ρ of {star} {self.spearman.get(star, float('nan')):.2f} < {self.bar}"
            for star in GATED_NORTH_STARS
            if not self.spearman.get(star, float("nan")) >= self.bar
        ]
        model, best = self.world_model_test_ndcg10, self.best_policy_test_ndcg10
        if model is not None and best is not None and model < best:
            out.append(f"the simulated users predict real next items worse (test NDCG@10 {model:.4f}) than the best "
                       f"reference policy ({best:.4f})")  # fmt: skip
        return out

    @property
    def passed(self) -> bool:
        return not self.shortfalls

    def sentence(self) -> str:
        """The report's statement of fidelity, with a plain warning when below the bar."""
        rho = ", ".join(f"{star} {value:+.2f}" for star, value in self.spearman.items())
        users = ""
        if self.world_model_test_ndcg10 is not None:
            best = self.best_policy_test_ndcg10 or float("nan")
            users = (f"; the simulated users predict real held-out next items at test NDCG@10 "
                     f"{self.world_model_test_ndcg10:.4f} (best reference policy {best:.4f})")  # fmt: skip
        measured = (
            f"Simulator fidelity on {self.dataset}: Spearman ρ between the simulated north stars and real held-out "
            f"NDCG@10 over {self.policies} reference policies: {rho}{users} ({self.source})."
        )
        if self.passed:
            return f"{measured} It meets the bar (ρ ≥ {self.bar} for {', '.join(GATED_NORTH_STARS)})."
        return (
            f"{measured} **Warning: this verdict rests on a simulator below the fidelity bar** "
            f"({'; '.join(self.shortfalls)}): the simulated users may not rank these models as real users would."
        )


def from_benchmark(payload: dict[str, Any]) -> SimulatorFidelity:
    """The fidelity a finished ``benchmarks/simulator_fidelity.py`` run measured."""
    policies = payload["policies"]
    settings = payload.get("settings", {})
    return SimulatorFidelity(
        dataset=payload["dataset_name"],
        source=f"benchmarks/simulator_fidelity.py of {payload.get('date', 'unknown date')}, "
        f"{settings.get('users')} users X {settings.get('days')} days",
        policies=len(policies),
        spearman={star: float(payload["spearman"][star]) for star in payload["spearman"] if star in _NORTH_STARS},
        world_model_test_ndcg10=payload.get("world_model_test_ndcg10"),
        best_policy_test_ndcg10=max(float(p["offline_test_ndcg10"]) for p in policies.values()),
    )


_NORTH_STARS = ("active_days", "satisfaction", "retained_d7")


def simulator_fidelity(prepared: PreparedDataset, benchmark: Path = BENCHMARK_RESULT) -> SimulatorFidelity:
    """The latest fidelity of the simulator on ``prepared``: the benchmark's, a cached quick check, or a new one."""
    if benchmark.exists():
        payload = json.loads(benchmark.read_text())
        if payload.get("dataset_name") == prepared.name and "spearman" in payload:
            return from_benchmark(payload)
    cache = prepared.path / CACHE_NAME
    if cache.exists():
        try:
            return SimulatorFidelity.model_validate_json(cache.read_text())
        except ValidationError:
            pass  # an older format: measure again
    fidelity = quick_check(prepared)
    cache.write_text(fidelity.model_dump_json(indent=2) + "\n")
    return fidelity


def random_ndcg(sequences: UserSequences, stage: str = "test") -> float:
    """Exact expected NDCG@10 on ``stage`` of a uniformly random ranking of each user's unconsumed items."""
    gains = float(np.sum(1.0 / np.log2(np.arange(LIST_SIZE) + 2.0)))
    owners = np.repeat(np.arange(sequences.num_users), np.diff(sequences.offsets))
    code = SPLIT_CODES[stage]
    users = np.unique(owners[sequences.split == code])
    seen = np.bincount(owners[sequences.split < code], minlength=sequences.num_users)[users]
    return float(np.mean(gains / np.maximum(sequences.num_items - seen, LIST_SIZE))) if len(users) else 0.0


def item_item_policy(weights: np.ndarray, slate_size: int) -> Policy:
    """Top items of ``history @ weights`` (a binary history times an item-item matrix: EASE, ItemKNN)."""

    def policy(users: np.ndarray, histories: list[np.ndarray]) -> np.ndarray:
        rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
        items = np.concatenate([*histories, np.zeros(0, dtype=np.int64)])
        binary = sp.csr_matrix((np.ones(len(items), np.float32), (rows, items)), shape=(len(users), len(weights)))
        binary.data[:] = 1.0
        scores = np.asarray(binary @ weights)
        scores[:, 0] = -np.inf
        scores[rows, items] = -np.inf
        best = np.argpartition(-scores, slate_size, axis=1)[:, :slate_size]
        order = np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1, kind="stable")
        return np.take_along_axis(best, order, axis=1)

    return policy


def quick_check(prepared: PreparedDataset, users: int = QUICK_USERS, days: int = QUICK_DAYS) -> SimulatorFidelity:
    """Fidelity from cheap reference policies (random, popularity, ItemKNN, EASE) and a short simulation.

    The policies are fitted on the training split and scored on the real test events by the
    offline evaluator; each lives ``days`` days with the same seeded population of ``users``.
    """
    from recsys.baselines import EASE, ItemKNN, MostPopular
    from recsys.evaluation import ItemCatalog, evaluate

    sequences = UserSequences.from_prepared(prepared)
    catalog = ItemCatalog.build(prepared, sequences)
    truth = GroundTruth.fit(prepared)
    held_out = GroundTruth.fit(
        prepared, FitSettings(last_split=SPLIT_CODES["valid"], choice_weights=truth.choice_weights)
    )
    slate = PopulationConfig().slate_size
    ranking = 1 + np.argsort(-sequences.train_counts()[1:], kind="stable")
    ease, knn = EASE(sequences), ItemKNN(sequences)
    offline = {
        "random": random_ndcg(sequences),
        "popularity": evaluate(MostPopular(sequences), sequences, "test", catalog).metrics["ndcg@10"],
        "item_knn": evaluate(knn, sequences, "test", catalog).metrics["ndcg@10"],
        "ease": evaluate(ease, sequences, "test", catalog).metrics["ndcg@10"],
    }
    policies: dict[str, Policy] = {
        "random": random_policy(sequences.num_items, slate, seed=0),
        "popularity": lambda chosen, histories: first_unseen(ranking, chosen, histories, slate),
        "item_knn": item_item_policy(knn.similarity.numpy(), slate),
        "ease": item_item_policy(ease.weights.numpy(), slate),
    }
    config = PopulationConfig(users=users, days=days, pre_period_days=0)
    simulated: dict[str, dict[str, float]] = {}
    for name, policy in policies.items():
        summary = simulate(Population.sample(truth, sequences, config), {name: policy}, np.zeros(users, dtype=np.int64))
        simulated[name] = {"active_days": float(summary.experiment.active_days.mean()),
                           "satisfaction": float(summary.experiment.satisfaction.mean()),
                           "retained_d7": float(summary.experiment.retained(min(7, days - 1)).mean())}  # fmt: skip
    names = list(policies)
    spearman = {
        star: round(float(spearmanr([simulated[n][star] for n in names], [offline[n] for n in names]).statistic), 4)
        for star in _NORTH_STARS
    }
    return SimulatorFidelity(
        dataset=prepared.name,
        source=f"quick check of {datetime.now(UTC):%Y-%m-%d}: {', '.join(names)}, {users} users X {days} days",
        policies=len(names),
        spearman={star: 0.0 if np.isnan(value) else value for star, value in spearman.items()},
        world_model_test_ndcg10=round(next_item_ndcg(held_out, sequences, "test"), 4),
        best_policy_test_ndcg10=round(max(offline.values()), 4),
    )
