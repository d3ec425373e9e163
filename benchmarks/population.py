"""How fast the simulated population runs, and how far apart it puts the reference policies.

The ground truth is fitted once; then the same population (same seed) lives ``--days`` days under
each reference policy in turn: random slates (the baseline: the simulator's own cost, its policy
costs nothing), popularity and the oracle (true utilities over the whole catalogue per visit, the
most expensive policy). Reported per policy: seconds, simulated user-days and visits per second,
the ratio of seconds to the random baseline's, and D7 retention and visits per user, which show
whether the population tells a ceiling from a floor.

    python benchmarks/population.py [--dataset ml-1m] [--users 100000] [--days 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import peak_rss_mb, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args()

    from ab_testing.ground_truth import FitSettings, GroundTruth
    from ab_testing.population import (
        Population,
        PopulationConfig,
        oracle_policy,
        popularity_policy,
        random_policy,
        simulate,
    )
    from recsys.data.lookup import prepared_dataset
    from recsys.sequences import UserSequences
    from recsys.settings import get_settings

    prepared = prepared_dataset(args.dataset, get_settings())
    sequences = UserSequences.from_prepared(prepared)
    started = time.monotonic()
    truth = GroundTruth.fit(prepared, FitSettings(seed=0))
    fit_seconds = time.monotonic() - started
    config = PopulationConfig(users=args.users, days=args.days, pre_period_days=0)
    everyone = np.zeros(args.users, dtype=np.int64)
    policies: dict[str, Any] = {
        "random": lambda population: random_policy(truth.num_items, config.slate_size, seed=0),
        "popularity": lambda population: popularity_policy(truth, config.slate_size),
        "oracle": lambda population: oracle_policy(truth, population),
    }
    figures: dict[str, dict[str, float]] = {}
    for name, make in policies.items():
        population = Population.sample(truth, sequences, config)
        begun = time.monotonic()
        summary = simulate(population, {name: make(population)}, everyone)
        seconds = time.monotonic() - begun
        visits = float(summary.experiment.active_days.sum())
        figures[name] = {
            "seconds": round(seconds, 2),
            "user_days_per_s": round(args.users * args.days / seconds),
            "visits_per_s": round(visits / seconds),
            "retained_d7": round(float(summary.experiment.retained(7).mean()), 4),
            "visits_per_user": round(visits / args.users, 2),
        }
        print(name, json.dumps(figures[name]))
    baseline = figures["random"]["seconds"]
    for values in figures.values():
        values["seconds_ratio_vs_random"] = round(values["seconds"] / baseline, 3)
    result = {
        "users": args.users,
        "days": args.days,
        "ground_truth_fit_seconds": round(fit_seconds, 2),
        "policies": figures,
        "peak_rss_mb": round(peak_rss_mb()),
        "note": "one process, one policy at a time over the same seeded population; no pre-period, no event log",
    }
    path = write_result(f"population_{args.dataset.replace('-', '_')}", result, f"{args.dataset} (prepared)")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
