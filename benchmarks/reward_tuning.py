"""Does tuning a reward's weights make it predict the north-star better on logs it never saw?

Simulated A/B logs on the dataset (arms: the reference policies popularity, random and the
oracle) come in two disjoint sets: tuning logs (population seeds 1, 2) and held-out logs (seeds
11, 12: other simulated users, other daily dice). The default reward, ``clicks@1`` (what the seed
candidates train on: every click the same), is tuned with Optuna on the tuning logs under its
guardrails, with the dataset's training interactions as a monotonicity probe. ``alignment_before``
and ``alignment_after`` are measured on the held-out logs; the tuning logs' figures are recorded
apart. The hand-written ``engagement@1`` is measured on the same held-out logs for reference.

    python benchmarks/reward_tuning.py                       # ml-latest-small, 200 trials, a minute or two
    python benchmarks/reward_tuning.py --users 20000 --trials 500
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import write_result

TUNING_SEEDS = (1, 2)
HOLDOUT_SEEDS = (11, 12)
ARMS = ("popularity", "random", "oracle")


def _figures(alignment: Any) -> dict[str, float]:
    return {name: round(alignment.metric(name), 4) for name in ("alignment", "retention", "satisfaction",
                                                                "arm_agreement")}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-latest-small")
    parser.add_argument("--users", type=int, default=3000, help="simulated users per log")
    parser.add_argument("--days", type=int, default=14, help="experiment days per log")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0, help="seed of the search")
    args = parser.parse_args()

    from ab_testing.experiment import ArmPlan, ExperimentPlan
    from ab_testing.ground_truth import GroundTruth
    from ab_testing.reference_logs import simulate_reference_log
    from recsys.data.lookup import prepared_dataset
    from recsys.event_table import from_interactions
    from recsys.settings import get_settings
    from reward_lib.alignment import measure
    from reward_lib.logs import LogFile
    from reward_lib.store import resolve_reward
    from reward_lib.tune import tune

    started = time.monotonic()
    prepared = prepared_dataset(args.dataset, get_settings())
    truth = GroundTruth.fit(prepared)
    with tempfile.TemporaryDirectory(prefix="reward-tuning-") as folder:
        logs = {}
        for seed in TUNING_SEEDS + HOLDOUT_SEEDS:
            plan = ExperimentPlan(
                name=f"reference-{seed}", dataset=args.dataset, arms=tuple(ArmPlan(name=arm) for arm in ARMS),
                users=args.users, days=args.days, pre_period_days=0, seed=seed,
            )  # fmt: skip
            logs[seed] = LogFile.find(simulate_reference_log(plan, prepared, Path(folder) / plan.name, truth)).read(
                prepared.items
            )
    simulated = time.monotonic() - started
    tuning, holdout = [logs[s] for s in TUNING_SEEDS], [logs[s] for s in HOLDOUT_SEEDS]
    probe = ("training interactions", from_interactions(prepared.interactions, prepared.items))
    default = resolve_reward("clicks@1")
    tuning_started = time.monotonic()
    assert default.spec is not None, "clicks@1 is a reward spec"
    result = tune(default.spec, tuning, args.trials, args.seed, holdout, [probe], source=default.source)
    seconds = time.monotonic() - tuning_started
    assert result.holdout_before is not None and result.holdout_after is not None, "held-out logs were given"
    figures = {
        "alignment_before": round(result.holdout_before.score, 4),
        "alignment_after": round(result.holdout_after.score, 4),
        "measured_on": f"held-out simulated logs (population seeds {list(HOLDOUT_SEEDS)}), not the tuning logs "
        f"(seeds {list(TUNING_SEEDS)}); alignment = mean of the per-user Spearman correlations of the reward "
        "with later retention and with later satisfaction",
        "reward_before": default.key,
        "reward_after": f"{result.after.name} tuned from {result.after.tuned_from}",
        "trials": len(result.trials),
        "feasible_trials": sum(t.feasible for t in result.trials),
        "seconds": round(seconds, 1),
        "total_seconds": round(time.monotonic() - started, 1),
        "simulation_seconds": round(simulated, 1),
        "holdout_before": _figures(result.holdout_before),
        "holdout_after": _figures(result.holdout_after),
        "tuning_logs_before": _figures(result.alignment_before),
        "tuning_logs_after": _figures(result.alignment_after),
        "engagement_holdout": _figures(measure(resolve_reward("engagement@1"), holdout)),
        "weights_after": {c.label: c.weight for c in result.after.components},
        "searched": list(result.searched),
        "kept": result.kept,
        "guardrails": [g.model_dump(exclude_none=True) for g in result.before.tuning.guardrails],
        "logs": {
            "users": args.users,
            "days": args.days,
            "arms": list(ARMS),
            "split_day": tuning[0].split_day,
            "tuning_seeds": list(TUNING_SEEDS),
            "holdout_seeds": list(HOLDOUT_SEEDS),
        },
        "seed": args.seed,
    }
    path = write_result("reward_tuning", figures, args.dataset)
    print(f"alignment on held-out logs: {figures['alignment_before']} -> {figures['alignment_after']} "
          f"({figures['trials']} trials, {figures['seconds']} s); {path}")  # fmt: skip


if __name__ == "__main__":
    main()
