"""The A/B report a person reads before approving: JSON, Markdown, and HTML with plots.

It shows the decision and why, each metric with its confidence interval, the health checks
(sample ratio, pre-period balance, planned against observed sample size), the cumulative lift of
active days with its confidence band by day, and the lift by user segment.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ab_testing.analysis import Analysis, planned_users_per_arm
from ab_testing.experiment import SEGMENTS, ExperimentRun
from ab_testing.statistics import welch_test
from recsys.reports import figure_png, write_report_files


def cumulative_lift(run: ExperimentRun, analysis: Analysis) -> list[dict[str, float]]:
    """Per day, the relative lift of active days so far (treatment against control) with its CI."""
    arms = run.users["arm"].to_numpy()
    treated, control = run.visits[arms == analysis.treatment], run.visits[arms == analysis.control]
    points = []
    for day in range(1, run.visits.shape[1] + 1):
        comparison = welch_test(treated[:, :day].sum(1), control[:, :day].sum(1), run.plan.alpha)
        points.append({"day": day, "lift": comparison.relative_lift, "low": comparison.relative_ci_low,
                       "high": comparison.relative_ci_high})  # fmt: skip
    return points


def segment_lifts(run: ExperimentRun, analysis: Analysis) -> list[dict[str, Any]]:
    """Relative lift of active days per activity segment."""
    frame = run.users
    rows = []
    for segment in SEGMENTS:
        part = frame[frame["segment"] == segment]
        treated = part.loc[part["arm"] == analysis.treatment, "active_days"].to_numpy(float)
        control = part.loc[part["arm"] == analysis.control, "active_days"].to_numpy(float)
        comparison = welch_test(treated, control, run.plan.alpha)
        rows.append({"segment": segment, "users": len(part), "lift": comparison.relative_lift,
                     "low": comparison.relative_ci_low, "high": comparison.relative_ci_high})  # fmt: skip
    return rows


def health_checks(run: ExperimentRun, analysis: Analysis) -> list[dict[str, Any]]:
    """Checks that the experiment itself is sound, each with a pass flag and a sentence."""
    frame, plan = run.users, run.plan
    control = frame.loc[frame["arm"] == analysis.control]
    treated = frame.loc[frame["arm"] == analysis.treatment]
    balance = welch_test(treated["pre_active_days"].to_numpy(float), control["pre_active_days"].to_numpy(float))
    baseline = control["active_days"].to_numpy(float)
    needed = planned_users_per_arm(plan, baseline)
    srm = analysis.srm
    return [
        {"check": "sample ratio", "passed": not srm.mismatch,
         "detail": f"observed {list(srm.observed)} for expected shares {[round(s, 3) for s in srm.expected_shares]}, "
                   f"chi-square p={srm.p_value:.3g}"},
        {"check": "pre-period balance", "passed": balance.p_value >= plan.alpha,
         "detail": f"pre-period active days differ by {balance.relative_lift:+.2%} (p={balance.p_value:.3g})"},
        {"check": "sample size", "passed": min(len(control), len(treated)) >= needed,
         "detail": f"{len(treated)} / {len(control)} users; {needed} per arm detect a {plan.mde:.0%} change in active "
                   f"days at power {plan.power:.0%}, α split over the north stars"},
    ]  # fmt: skip


def _lift_plot(points: list[dict[str, float]], title: str) -> str:
    figure, axis = plt.subplots(figsize=(7, 3.2), dpi=110)
    days = [p["day"] for p in points]
    axis.plot(days, [100 * p["lift"] for p in points], color="C0", label="lift")
    axis.fill_between(days, [100 * p["low"] for p in points], [100 * p["high"] for p in points], alpha=0.25,
                      color="C0", label="confidence band")  # fmt: skip
    axis.axhline(0, color="grey", linewidth=0.8)
    axis.set_xlabel("day of the experiment")
    axis.set_ylabel("lift of active days (%)")
    axis.set_title(title)
    axis.legend(loc="best")
    return figure_png(figure)


def _metric_plot(analysis: Analysis) -> str:
    names = [spec.name for spec in analysis.specs]
    comparisons = [analysis.comparisons[name] for name in names]
    lifts = np.array([100 * c.relative_lift for c in comparisons])
    errors = np.array([[100 * (c.relative_lift - c.relative_ci_low) for c in comparisons],
                       [100 * (c.relative_ci_high - c.relative_lift) for c in comparisons]])  # fmt: skip
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(names) + 1), dpi=110)
    axis.errorbar(lifts, range(len(names)), xerr=np.nan_to_num(errors, posinf=0), fmt="o", capsize=3)
    axis.axvline(0, color="grey", linewidth=0.8)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("relative lift, treatment against control (%)")
    return figure_png(figure)


def fidelity_statement(run: ExperimentRun) -> str:
    """How far the simulator behind the verdict ranks models as real users do, or that nobody measured it."""
    if run.fidelity is None:
        warning = "**Warning: the simulator's fidelity was not measured for this run**"
        return f"{warning}: the verdict may not hold for real users."
    return run.fidelity.sentence()


def report_markdown(run: ExperimentRun, analysis: Analysis) -> str:
    plan = run.plan
    lines = [
        f"# Experiment {plan.name}: {analysis.treatment} against {analysis.control}",
        "",
        f"**{'SHIP (awaiting approval)' if analysis.ship else 'DO NOT SHIP'}**",
        "",
        *[f"- {reason}" for reason in analysis.reasons()],
        "",
        fidelity_statement(run),
        "",
        f"{len(run.users)} simulated users, {plan.days} days after a {plan.pre_period_days}-day pre-period; "
        f"alpha {plan.alpha}, salt `{plan.assignment_salt}`; {run.seconds:.0f} s.",
        "",
        "## Metrics",
        "",
        "| metric | kind | control | treatment | lift | CI | p |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in analysis.specs:
        c = analysis.comparisons[spec.name]
        lines.append(
            f"| {spec.name} | {spec.kind} | {c.mean_control:.4g} | {c.mean_treatment:.4g} | {c.relative_lift:+.2%} | "
            f"{c.relative_ci_low:+.2%} .. {c.relative_ci_high:+.2%} | {c.p_value:.3g} |"
        )
    lines += [
        "",
        "| arm-level guardrail | control | treatment | change | margin | passed |",
        "|---|---|---|---|---|---|",
    ]
    lines += [f"| {g.name} | {g.control:.4g} | {g.treatment:.4g} | {g.relative_change:+.1%} | {g.margin:.0%} | "
              f"{'yes' if g.passed else 'no'} |" for g in analysis.arm_guardrails]  # fmt: skip
    lines += ["", "## Health checks", ""]
    lines += [
        f"- {'ok' if c['passed'] else 'FAILED'}: {c['check']}: {c['detail']}" for c in health_checks(run, analysis)
    ]
    lines += ["", "## Segments (lift of active days)", ""]
    lines += [f"- {row['segment']} ({row['users']} users): {row['lift']:+.2%} ({row['low']:+.2%} .. {row['high']:+.2%})"
              for row in segment_lifts(run, analysis)]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_report(run: ExperimentRun, analysis: Analysis) -> dict[str, Path]:
    """``report-<treatment>.{json,md,html}`` in the run folder."""
    stem = run.folder / f"report-{analysis.treatment}"
    points = cumulative_lift(run, analysis)
    payload = {
        "plan": run.plan.model_dump(mode="json"),
        **analysis.to_json(),
        "health_checks": health_checks(run, analysis),
        "cumulative_lift": points,
        "segments": segment_lifts(run, analysis),
        "guardrails": run.guardrails,
        "seconds": run.seconds,
        "simulator_fidelity": None
        if run.fidelity is None
        else {
            **run.fidelity.model_dump(mode="json"),
            "passed": run.fidelity.passed,
            "shortfalls": run.fidelity.shortfalls,
        },
    }
    json_path = stem.with_suffix(".json")
    json_path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    plots = [("cumulative lift of active days by day", _lift_plot(points, "cumulative lift with its confidence band")),
             ("relative lift of every metric with its confidence interval", _metric_plot(analysis))]  # fmt: skip
    return {
        "json": json_path,
        **write_report_files(stem, f"Experiment {run.plan.name}", report_markdown(run, analysis), plots),
    }
