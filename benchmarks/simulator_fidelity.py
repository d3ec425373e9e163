"""Does the simulator rank models the way real users do? Simulated north stars against real held-out accuracy.

The world model (``ab_testing.ground_truth``) is fitted once on every split for the simulation,
and once more without the test split (same calibrated blend weights) to measure how well the
simulated users predict the real held-out next items (``world_model_test_ndcg10``, the offline
protocol: full ranking, consumed items masked). Then the same seeded population lives ``--days``
days under each reference policy in turn: random slates, popularity (training counts), EASE (fitted
on the training split), and MF-BPR, SASRec (BCE) and SASRec (full CE) from
``benchmarks/reproduce_ml1m.py``'s best checkpoints, exported and served in process like any arm.

For each north star, Spearman's ρ and Kendall's τ between the simulated figures and the policies'
real test NDCG@10 (from ``reproduce_ml1m.json``; random's is its exact expectation), over all
policies and without random. The temporal hold-out replays the last ``--recent-weeks`` of the data:
the users whose test event happened then, each policy ranking for them from their real history as
it serves simulated users, scored by NDCG@10 on that event; ρ is given against it too.

Each policy's figures are saved as soon as it finishes; a second invocation with the same settings
resumes after the last finished policy (``sessions`` and ``seconds`` add up).

    python benchmarks/simulator_fidelity.py [--dataset ml-1m] [--users 10000] [--days 14] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import RESULTS, peak_rss_mb, write_result
from benchmarks.serving import export_checkpoint

NAME = "simulator_fidelity"
POLICIES = ("random", "popularity", "ease", "mf_bpr", "sasrec_bce", "sasrec_ce")
OFFLINE_NAMES = {"popularity": "most_popular"}  # reproduce_ml1m.json's names
SERVED = ("mf_bpr", "sasrec_bce", "sasrec_ce")
NORTH_STARS = ("active_days", "satisfaction", "retained_d7")
REPORTED = (*NORTH_STARS, "mean_satisfaction", "ctr", "left")

PolicyFactory = Callable[[np.ndarray], Any]  # source user of each simulated user -> a population policy


def factories(prepared: Any, sequences: Any, slate_size: int, work: Path) -> dict[str, PolicyFactory]:
    from ab_testing.experiment import ServedPolicy
    from ab_testing.fidelity import item_item_policy
    from ab_testing.population import first_unseen, random_policy
    from recsys.baselines import EASE
    from recsys.evaluation import ItemCatalog
    from serving.artifacts import load_artifact

    catalog = ItemCatalog.build(prepared, sequences)
    ranking = 1 + np.argsort(-sequences.train_counts()[1:], kind="stable")
    ease = EASE(sequences).weights.numpy()

    def served(name: str) -> PolicyFactory:
        def make(source_user: np.ndarray) -> Any:
            model = load_artifact(str(export_checkpoint(name, prepared, work)))
            return ServedPolicy(model, source_user, catalog, slate_size)

        return make

    def popularity(source_user: np.ndarray) -> Any:
        return lambda users, histories: first_unseen(ranking, users, histories, slate_size)

    return {
        "random": lambda source_user: random_policy(sequences.num_items, slate_size, seed=0),
        "popularity": popularity,
        "ease": lambda source_user: item_item_policy(ease, slate_size),
        **{name: served(name) for name in SERVED},
    }


def temporal_users(prepared: Any, sequences: Any, weeks: float) -> np.ndarray:
    """Users whose test event lies in the last ``weeks`` of the data."""
    frame = prepared.interactions
    test = frame[frame["split"].astype(str) == "test"]
    cutoff = int(frame["timestamp"].max()) - int(weeks * 7 * 24 * 3600)  # timestamps are Unix seconds
    return np.unique(test.loc[test["timestamp"] >= cutoff, "user_idx"].to_numpy(np.int64))


def replay_ndcg(make: PolicyFactory, sequences: Any, users: np.ndarray) -> float:
    """NDCG@10 of the policy's slates for real ``users`` on their test item, from their history before it."""
    histories = [sequences.history(int(user), "test") for user in users]
    targets = np.array([sequences.targets(int(user), "test")[0] for user in users])
    slates = np.asarray(make(np.arange(sequences.num_users))(users, histories))
    hit = slates == targets[:, None]
    gains = np.where(hit.any(axis=1), 1.0 / np.log2(hit.argmax(axis=1) + 2.0), 0.0)
    return float(gains.mean())


def simulate_policy(truth: Any, sequences: Any, config: Any, make: PolicyFactory) -> dict[str, float]:
    from ab_testing.population import Population, simulate

    population = Population.sample(truth, sequences, config)
    began = time.monotonic()
    summary = simulate(population, {"only": make(population.source_user)}, np.zeros(config.users, dtype=np.int64))
    period = summary.experiment
    columns = summary.to_frame()
    return {
        "active_days": round(float(period.active_days.mean()), 4),
        "satisfaction": round(float(period.satisfaction.mean()), 4),
        "retained_d7": round(float(period.retained(7).mean()), 4),
        "mean_satisfaction": round(float(np.nanmean(period.mean_satisfaction)), 4),
        "ctr": round(float(period.clicks.sum() / max(period.impressions.sum(), 1)), 4),
        "left": round(float(columns["left"].mean()), 4),
        "simulation_seconds": round(time.monotonic() - began, 1),
    }


def correlations(policies: dict[str, dict[str, Any]], offline: str) -> dict[str, dict[str, float]]:
    """Spearman and Kendall of each figure against ``offline``, over all policies and without random (``left``
    negated: fewer users leaving is better)."""
    from scipy.stats import kendalltau, spearmanr

    out: dict[str, dict[str, float]] = {"spearman": {}, "kendall": {}, "spearman_without_random": {}}
    names = [name for name in policies if policies[name].get(offline) is not None]
    for star in REPORTED:
        values = [policies[name][star] * (-1 if star == "left" else 1) for name in names]
        reference = [policies[name][offline] for name in names]
        out["spearman"][star] = round(float(spearmanr(values, reference).statistic), 4)
        out["kendall"][star] = round(float(kendalltau(values, reference).statistic), 4)
        kept = [i for i, name in enumerate(names) if name != "random"]
        out["spearman_without_random"][star] = round(
            float(spearmanr([values[i] for i in kept], [reference[i] for i in kept]).statistic), 4
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recent-weeks", type=float, default=8.0, help="the temporal hold-out: last weeks replayed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads for scoring")
    args = parser.parse_args()
    started = time.monotonic()

    import torch

    from ab_testing.fidelity import FIDELITY_BAR, GATED_NORTH_STARS, random_ndcg
    from ab_testing.ground_truth import CHOICE_FEATURES, FitSettings, GroundTruth, next_item_ndcg
    from ab_testing.population import PopulationConfig
    from recsys.data.lookup import prepared_dataset
    from recsys.sequences import UserSequences
    from recsys.settings import get_settings

    torch.set_num_threads(args.threads)
    prepared = prepared_dataset(args.dataset, get_settings())
    sequences = UserSequences.from_prepared(prepared)
    settings = {"users": args.users, "days": args.days, "seed": args.seed, "recent_weeks": args.recent_weeks}
    path = RESULTS / f"{NAME}.json"
    record: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if record.get("settings") != settings or record.get("dataset_name") != args.dataset:
        record = {"settings": settings, "dataset_name": args.dataset, "policies": {}, "sessions": 0, "seconds": 0.0}
    record["sessions"] += 1
    previous_seconds = record["seconds"]

    def save() -> None:
        record["seconds"] = round(previous_seconds + time.monotonic() - started, 1)
        record["peak_rss_mb"] = round(peak_rss_mb())
        write_result(NAME, record, f"{args.dataset} (prepared)")

    begun = time.monotonic()
    truth = GroundTruth.fit(prepared, FitSettings(seed=args.seed))
    record["world_model"] = {
        "parts": "next-item ridge regression on the last 20 items (recency decay 0.8) + weighted ALS taste with item "
        "quality + log popularity, blended by a multinomial logit over the catalogue",
        "choice_weights": {
            name: round(float(w), 4) for name, w in zip(CHOICE_FEATURES, truth.choice_weights, strict=True)
        },
        "calibration": "direction of the weights: Powell search for the best validation NDCG@10 with every part "
        "fitted on the training split; scale (inverse temperature): maximum likelihood of the validation choices",
        "fit_seconds": round(time.monotonic() - begun, 1),
    }
    if "world_model_test_ndcg10" not in record:
        held_out = GroundTruth.fit(
            prepared, FitSettings(seed=args.seed, last_split=1, choice_weights=truth.choice_weights)
        )
        record["world_model_test_ndcg10"] = round(next_item_ndcg(held_out, sequences, "test"), 4)
        print(f"world model test NDCG@10 {record['world_model_test_ndcg10']}", flush=True)
    save()

    reproduced = json.loads((RESULTS / "reproduce_ml1m.json").read_text())["models"]
    config = PopulationConfig(users=args.users, days=args.days, pre_period_days=0, seed=args.seed)
    recent = temporal_users(prepared, sequences, args.recent_weeks)
    record["temporal_holdout_users"] = len(recent)
    work = Path(tempfile.mkdtemp(prefix="evorec-fidelity-"))
    try:
        makers = factories(prepared, sequences, config.slate_size, work)
        for name in POLICIES:
            if name in record["policies"]:
                continue
            figures = simulate_policy(truth, sequences, config, makers[name])
            offline_name = OFFLINE_NAMES.get(name, name)
            offline = random_ndcg(sequences) if name == "random" else reproduced[offline_name]["test_ndcg10"]
            figures["offline_test_ndcg10"] = round(float(offline), 4)
            figures["temporal_holdout_ndcg10"] = round(replay_ndcg(makers[name], sequences, recent), 4)
            record["policies"][name] = figures
            print(name, json.dumps(figures), flush=True)
            save()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(record["policies"]) == len(POLICIES):
        record.update(correlations(record["policies"], "offline_test_ndcg10"))
        temporal = correlations(record["policies"], "temporal_holdout_ndcg10")
        record["temporal_holdout"] = {"spearman": temporal["spearman"], "kendall": temporal["kendall"]}
        policies = record["policies"]
        order = sorted(record["policies"], key=lambda n: -record["policies"][n]["offline_test_ndcg10"])
        record["fidelity"] = {
            "bar": FIDELITY_BAR,
            "passed": all(record["spearman"][star] >= FIDELITY_BAR for star in GATED_NORTH_STARS),
            "sasrec_ce_ahead_of_sasrec_bce": {
                star: policies["sasrec_ce"][star] > policies["sasrec_bce"][star] for star in NORTH_STARS
            },
            "offline_order": order,
        }
    save()
    print(path.read_text())


if __name__ == "__main__":
    main()
