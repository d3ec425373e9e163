"""Simulated A/B testing: its speed, its false positives, its power, and one real comparison on ML-1M.

One seeded run, one ground truth fitted on the dataset, four figures:

1. ``user_days_per_s``: a full experiment (``run_experiment``: pre-period, hashed assignment, two
   served SASRec arms scored in process, event log, per-user frame) against the bare population
   with the popularity policy over the same users and days (no scoring, no log); the ratio of
   their seconds is the cost of serving.
2. ``aa_false_positive_rate``: ``--aa-runs`` A/A experiments (the popularity policy in both arms,
   a new population seed and a new assignment salt per run), each judged by ``analyse`` on the
   plan's north stars, i.e. CUPED Welch tests with Holm's correction, as the decision rule does.
   A false positive is any north star significant after Holm (better or worse). Clopper-Pearson
   intervals.
3. ``power_at_mde``: the same runs with a lift of the plan's MDE injected into the treatment
   arm's active days (each treated user's active days times ``1 + mde``), at the sample size the
   plan's power calculation asks for (``planned_users_per_arm``, as the report's sample-size check:
   active days of a pilot run, α split over the north stars). Detected: the decision rule calls
   active days better. Shown beside it: plain Welch at the split α, and CUPED without Holm.
4. ``best_vs_seed_northstar_lift``: ``run_experiment`` on ML-1M of ``sasrec_ce`` (the seed after
   the rulebook's ``full_cross_entropy`` edit) against ``sasrec_bce`` (the seed, control), both
   from ``benchmarks/reproduce_ml1m.py``'s best checkpoints, and its verdict by ``analyse``.

The plans take the embedded online agent's settings (``pipelines/config.py``: 18,000 users, 14 days,
a 7-day pre-period, α 0.05, power 0.8, MDE 2%). Scoring uses ``--threads`` threads (default: torch's,
every core, as the online agent runs it): a served SASRec's batches of users run that many side by side.

    python benchmarks/ab_simulation.py [--dataset ml-1m] [--users 18000] [--days 14] [--aa-runs 500]
        [--aa-users N (default: what the power calculation asks for)] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.common import peak_rss_mb, write_result
from benchmarks.serving import CHECKPOINTS, export_checkpoint
from pipelines.config import EMBEDDED_ONLINE

PILOT_USERS = 10_000
PILOT_SEED = 0  # the A/A runs use seeds 1, 2, ...
CONTROL, TREATMENT = "sasrec_bce", "sasrec_ce"
UNMEASURED = {"coverage": 1.0, "p99_latency_ms": 1.0}  # A/A runs judge the north stars only


def clopper_pearson(hits: int, runs: int) -> dict[str, Any]:
    """A rate with its exact binomial 95% interval."""
    from scipy.stats import binomtest

    interval = binomtest(hits, runs).proportion_ci(confidence_level=0.95, method="exact")
    return {
        "rate": round(hits / runs, 4),
        "hits": hits,
        "runs": runs,
        "ci95": [round(interval.low, 4), round(interval.high, 4)],
    }


def plan_for(config: Any, name: str, arms: tuple[str, str], dataset: str) -> Any:
    """An experiment plan with the online agent's settings (every field the two share)."""
    from ab_testing.experiment import ArmPlan, ExperimentPlan

    shared = set(ExperimentPlan.model_fields) & set(type(config).model_fields)
    return ExperimentPlan(
        name=name, dataset=dataset, arms=tuple(ArmPlan(name=arm) for arm in arms), **config.model_dump(include=shared)
    )


def north_stars(days: int) -> list[Any]:
    from ab_testing.analysis import default_metrics

    return [spec for spec in default_metrics(days) if spec.kind == "north_star"]


def judge(plan: Any, summary: Any, lift: float = 0.0) -> Any:
    """The decision rule's analysis of a simulated run on its north stars (``lift``: injected into active days)."""
    from ab_testing.analysis import analyse
    from ab_testing.experiment import ExperimentRun

    frame = summary.to_frame()
    if lift:
        treated = frame["arm"] == plan.arms[1].name
        frame["active_days"] = frame["active_days"].astype(float)
        frame.loc[treated, "active_days"] *= 1 + lift
    guardrails = {arm.name: UNMEASURED for arm in plan.arms}
    run = ExperimentRun(plan, frame, summary.experiment.visits, guardrails, Path("."), 0.0)
    [analysis] = analyse(run, north_stars(plan.days))
    return analysis


def significant_north_stars(analysis: Any, alpha: float) -> list[str]:
    """North stars the decision rule calls better or significantly worse (Holm-adjusted p <= alpha)."""
    adjusted = analysis.decision.north_star_adjusted_p
    return [name for name, p in adjusted.items() if p <= alpha and analysis.comparisons[name].error is None]


def aa_and_power(args: argparse.Namespace, truth: Any, sequences: Any, base: Any) -> dict[str, Any]:
    """Figures 2 and 3: A/A runs, and the same runs with the MDE injected into active days."""
    from ab_testing.analysis import planned_users_per_arm
    from ab_testing.experiment import assign, simulated_user_ids
    from ab_testing.population import Population, popularity_policy, simulate
    from ab_testing.statistics import welch_test

    policy = popularity_policy(truth, base.population_config().slate_size)
    arms = {arm.name: policy for arm in base.arms}

    def simulated(plan: Any) -> Any:
        population = Population.sample(truth, sequences, plan.population_config())
        return simulate(population, arms, assign(plan, simulated_user_ids(plan.users)))

    pilot_plan = base.model_copy(update={"users": PILOT_USERS, "seed": PILOT_SEED, "salt": "pilot"})
    pilot = simulated(pilot_plan).to_frame()["active_days"].to_numpy(float)
    per_arm = planned_users_per_arm(base, pilot)
    users = args.aa_users or 2 * per_arm
    specs = north_stars(base.days)
    flagged, shipped, srm, raw = 0, 0, 0, {spec.name: 0 for spec in specs}
    detected = {"decision_rule": 0, "cuped_no_holm": 0, "welch": 0}
    observed_lift, reduction = [], []
    started = time.monotonic()
    for index in range(args.aa_runs):
        plan = base.model_copy(update={"users": users, "seed": PILOT_SEED + 1 + index, "salt": f"aa-{index}"})
        summary = simulated(plan)
        analysis = judge(plan, summary)
        flagged += bool(significant_north_stars(analysis, plan.alpha))
        shipped += analysis.decision.ship
        srm += analysis.srm.mismatch
        for name, comparison in analysis.comparisons.items():
            raw[name] += comparison.significant
        reduction.append(analysis.comparisons["active_days"].variance_reduction)
        injected = judge(plan, summary, lift=plan.mde)
        active = injected.comparisons["active_days"]
        detected["decision_rule"] += "active_days" in injected.decision.better_north_stars
        detected["cuped_no_holm"] += active.significant and active.difference > 0
        frame = summary.to_frame()
        treated = frame["arm"] == plan.arms[1].name
        days = frame["active_days"].to_numpy(float) * np.where(treated, 1 + plan.mde, 1.0)
        welch = welch_test(days[treated.to_numpy()], days[~treated.to_numpy()], plan.alpha / len(specs))
        detected["welch"] += welch.significant and welch.difference > 0
        observed_lift.append(active.relative_lift)
        if (index + 1) % 50 == 0:
            print(f"A/A run {index + 1}/{args.aa_runs}: {time.monotonic() - started:.0f} s", flush=True)
    seconds = time.monotonic() - started
    runs = args.aa_runs
    return {
        "aa_false_positive_rate": {
            **clopper_pearson(flagged, runs),
            "alpha": base.alpha,
            "aa_runs": runs,
            "test": "any north star (" + ", ".join(raw) + ") significant after Holm, CUPED Welch each (analyse)",
            "ship_rate": clopper_pearson(shipped, runs),
            "srm_mismatch_rate": clopper_pearson(srm, runs),
            "per_metric_unadjusted": {name: clopper_pearson(hits, runs) for name, hits in raw.items()},
            "mean_cuped_variance_reduction_active_days": round(float(np.mean(reduction)), 4),
        },
        "power_at_mde": {
            "planned_power": base.power,
            "mde": base.mde,
            "alpha": base.alpha,
            "planned_users_per_arm": per_arm,
            "power_calculation": (
                f"power_analysis on active days of a {PILOT_USERS}-user pilot (mean {pilot.mean():.3f}, "
                f"std {pilot.std():.3f}): plain Welch at alpha over the number of north stars, no CUPED"
            ),
            "measured_detection_rate": clopper_pearson(detected["decision_rule"], runs),
            "cuped_without_holm_detection_rate": clopper_pearson(detected["cuped_no_holm"], runs),
            "welch_detection_rate": clopper_pearson(detected["welch"], runs),
            "mean_observed_relative_lift": round(float(np.mean(observed_lift)), 5),
            "injection": "treated users' active days times (1 + mde), on the A/A runs' data",
        },
        "aa_setup": {
            "users_per_run": users,
            "days": base.days,
            "pre_period_days": base.pre_period_days,
            "policy": "popularity in both arms",
            "seeds": f"population seed {PILOT_SEED + 1}..{PILOT_SEED + runs}, salt aa-<run>",
            "seconds": round(seconds, 1),
            "user_days_per_s": round(runs * users * (base.days + base.pre_period_days) / seconds),
        },
    }


def best_checkpoint(name: str, prepared: Any, out: Path) -> tuple[Any, int]:
    """The seed's reproduce_ml1m best checkpoint as a served model, and its epoch.

    The training run may rewrite ``best.pt`` meanwhile: retry until the file and the epoch log say
    the same before and after the copy.
    """
    from serving.artifacts import load_artifact

    def state() -> tuple[int, int]:
        lines = (CHECKPOINTS / name / "epochs.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["best_epoch"], (CHECKPOINTS / name / "best.pt").stat().st_mtime_ns

    for _ in range(5):
        before = state()
        try:
            artifact = export_checkpoint(name, prepared, out)
        except (RuntimeError, EOFError, OSError) as exc:  # a half-written best.pt
            print(f"{name}: checkpoint unreadable ({exc}), retrying", flush=True)
        else:
            if state() == before:
                return load_artifact(str(artifact)), before[0]
        time.sleep(5)
    raise RuntimeError(f"{name}: best.pt kept changing while it was read")


def ml1m_experiment(args: argparse.Namespace, config: Any, prepared: Any, truth: Any, work: Path) -> dict[str, Any]:
    """Figures 1 and 4: the served SASRec experiment, its speed against the bare population, its verdict."""
    from ab_testing.analysis import analyse
    from ab_testing.experiment import run_experiment
    from ab_testing.population import Population, popularity_policy, simulate
    from recsys.candidate import load_candidate
    from recsys.sequences import UserSequences

    control, control_epoch = best_checkpoint(CONTROL, prepared, work)
    treatment, treatment_epoch = best_checkpoint(TREATMENT, prepared, work)
    reproduced = json.loads((Path(__file__).parent / "results" / "reproduce_ml1m.json").read_text())["models"]
    plan = plan_for(config, "ab-simulation-ml1m", (CONTROL, TREATMENT), args.dataset)
    run = run_experiment(plan, prepared, {CONTROL: control, TREATMENT: treatment}, work / "experiment", truth)
    [analysis] = analyse(run)

    sequences = UserSequences.from_prepared(prepared)
    population = Population.sample(truth, sequences, plan.population_config())
    policy = popularity_policy(truth, population.config.slate_size)
    begun = time.monotonic()
    simulate(population, {"only": policy}, np.zeros(plan.users, dtype=np.int64))
    bare_seconds = time.monotonic() - begun
    user_days = plan.users * (plan.days + plan.pre_period_days)
    scoring_ms = sum(g["mean_latency_ms"] * g["requests"] for g in run.guardrails.values())

    def lift(name: str) -> dict[str, Any]:
        comparison = analysis.comparisons[name]
        adjusted = analysis.decision.north_star_adjusted_p.get(name)
        return {
            "relative_lift": round(comparison.relative_lift, 5),
            "ci95": [round(comparison.relative_ci_low, 5), round(comparison.relative_ci_high, 5)],
            "p_value": float(f"{comparison.p_value:.3g}"),
            "mean_control": round(comparison.mean_control, 4),
            "mean_treatment": round(comparison.mean_treatment, 4),
            **({"holm_adjusted_p": float(f"{adjusted:.3g}")} if adjusted is not None else {}),
            **(
                {"cuped_variance_reduction": round(comparison.variance_reduction, 4)}
                if comparison.variance_reduction is not None
                else {}
            ),
        }

    def identity(name: str, epoch: int) -> dict[str, Any]:
        content_hash = load_candidate(Path(__file__).parent.parent / "offline_agent" / "seeds" / name).content_hash
        return {
            "checkpoint": f"benchmarks/state/reproduce_ml1m/{name}/best.pt",
            "best_epoch": epoch,
            "content_hash_in_reproduce_ml1m": reproduced[name]["content_hash"],
            "content_hash_of_seed_code_now": content_hash,
            "finished_training": reproduced[name]["finished"],
        }

    return {
        "user_days_per_s": {
            "experiment": round(user_days / run.seconds),
            "bare_population_popularity": round(user_days / bare_seconds),
            "experiment_seconds": run.seconds,
            "bare_population_seconds": round(bare_seconds, 2),
            "seconds_ratio_experiment_to_bare": round(run.seconds / bare_seconds, 1),
            "arm_scoring_seconds": round(scoring_ms / 1000, 1),
            "user_days": user_days,
            "note": "user-days = users x (pre-period + experiment days); the experiment includes population "
            "sampling, scoring both arms and the pre-period, guardrail bookkeeping and the event log; "
            "arm_scoring_seconds is the summed latency of the two arms' scored requests in the experiment days (not "
            "the pre-period): batches scored side by side on several threads overlap, so it can exceed the wall time",
        },
        "best_vs_seed_northstar_lift": {
            "control": identity(CONTROL, control_epoch),
            "treatment": identity(TREATMENT, treatment_epoch),
            "users": plan.users,
            "days": plan.days,
            "pre_period_days": plan.pre_period_days,
            "north_stars": {spec.name: lift(spec.name) for spec in analysis.specs if spec.kind == "north_star"},
            "proxies": {spec.name: lift(spec.name) for spec in analysis.specs if spec.kind == "proxy"},
            "guardrails": {
                **{spec.name: lift(spec.name) for spec in analysis.specs if spec.kind == "guardrail"},
                **{guardrail.name: asdict(guardrail) for guardrail in analysis.arm_guardrails},
            },
            "srm_p_value": float(f"{analysis.srm.p_value:.3g}"),
            "ship": analysis.ship,
            "reasons": analysis.reasons(),
            "note": "the evolved ML-1M candidate of the evolution benchmark does not exist yet; compared instead: "
            f"{TREATMENT} (the seed after the rulebook's full_cross_entropy edit, trained to convergence) against "
            f"the {CONTROL} seed's best checkpoint so far (its training is still running)",
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m")
    parser.add_argument("--users", type=int, default=EMBEDDED_ONLINE.users, help="users of the ML-1M experiment")
    parser.add_argument("--days", type=int, default=EMBEDDED_ONLINE.days)
    parser.add_argument("--aa-runs", type=int, default=500)
    parser.add_argument("--aa-users", type=int, help="users per A/A run (default: what the power calculation asks)")
    parser.add_argument("--threads", type=int, help="scoring threads (default: torch's, every core)")
    args = parser.parse_args()
    started = time.monotonic()

    import torch

    from ab_testing.ground_truth import FitSettings, GroundTruth
    from recsys.data.lookup import prepared_dataset
    from recsys.sequences import UserSequences
    from recsys.settings import get_settings

    torch.set_num_threads(args.threads or torch.get_num_threads())
    prepared = prepared_dataset(args.dataset, get_settings())
    sequences = UserSequences.from_prepared(prepared)
    begun = time.monotonic()
    truth = GroundTruth.fit(prepared, FitSettings(seed=0))
    fit_seconds = time.monotonic() - begun
    config = EMBEDDED_ONLINE.model_copy(update={"users": args.users, "days": args.days})
    base = plan_for(config, "aa", ("control", "treatment"), args.dataset)
    figures: dict[str, Any] = {}
    if args.dataset == "ml-1m":
        work = Path(tempfile.mkdtemp(prefix="evorec-ab-simulation-"))
        try:
            figures.update(ml1m_experiment(args, config, prepared, truth, work))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(json.dumps(figures, indent=2), flush=True)
    else:
        figures["note"] = "the served SASRec experiment needs the ML-1M checkpoints: only A/A and power were run"
    figures.update(aa_and_power(args, truth, sequences, base))
    figures.update(
        ground_truth_fit_seconds=round(fit_seconds, 1),
        torch_threads=torch.get_num_threads(),
        seconds=round(time.monotonic() - started, 1),
        peak_rss_mb=round(peak_rss_mb()),
    )
    path = write_result("ab_simulation", figures, f"{args.dataset} (prepared)")
    print(path.read_text())


if __name__ == "__main__":
    main()
