"""The tuning report a person reads before using a tuned reward: JSON, Markdown, and HTML with plots.

It shows alignment before and after on the tuning logs and on the held-out ones (the fair
comparison: the search never saw them), the weights that moved and those kept with the reason,
and the search itself: each trial's alignment, the feasible ones and the best so far.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from recsys.reports import figure_png, html_page
from reward_lib.alignment import Alignment
from reward_lib.spec import OBJECTIVE_METRICS
from reward_lib.tune import TuneResult

SHOWN = ("alignment", *OBJECTIVE_METRICS)


def _comparisons(result: TuneResult) -> list[tuple[str, str, Alignment, Alignment]]:
    """``(key, caption, before, after)`` on the tuning logs, and on the held-out ones when there are."""
    pairs = [("tuning", "tuning logs", result.alignment_before, result.alignment_after)]
    if result.holdout_before is not None and result.holdout_after is not None:
        pairs.append(("holdout", "held-out logs", result.holdout_before, result.holdout_after))
    return pairs


def to_json(result: TuneResult, saved: Path) -> dict[str, Any]:
    return {
        "before": result.before.key,
        "after": result.after.key,
        "saved": str(saved),
        "searched": list(result.searched),
        "kept": result.kept,
        "weights_before": {c.label: c.weight for c in result.before.components},
        "weights_after": {c.label: c.weight for c in result.after.components},
        **{
            f"{key}_{when}": alignment.to_json()
            for key, _, before, after in _comparisons(result)
            for when, alignment in (("before", before), ("after", after))
        },
        "trials": [asdict(trial) for trial in result.trials],
        "seconds": result.seconds,
        "seed": result.seed,
    }


def to_markdown(result: TuneResult, saved: Path) -> str:
    feasible = [t for t in result.trials if t.feasible]
    lines = [
        f"# Reward tuning: {result.before.key} -> {result.after.key}",
        "",
        f"Saved as `{saved}` (a new version; `{result.before.key}` is unchanged). "
        f"{len(result.trials)} trials ({len(feasible)} within the guardrails), seed {result.seed}, "
        f"{result.seconds:.1f} s.",
        "",
        "## Alignment with the north-star",
        "",
        "| logs | metric | before | after | change |",
        "|---|---|---|---|---|",
    ]
    for _, which, before, after in _comparisons(result):
        for metric in SHOWN:
            old, new = before.metric(metric), after.metric(metric)
            lines.append(f"| {which} | {metric} | {old:.4f} | {new:.4f} | {new - old:+.4f} |")
    lines += ["", "## Weights", "", "| component | before | after | searched in |", "|---|---|---|---|"]
    for first, tuned in zip(result.before.components, result.after.components, strict=True):
        span = first.range
        where = f"[{span[0]:g}, {span[1]:g}]" if span is not None and first.label in result.searched else "kept"
        lines.append(f"| {first.label} | {first.weight:g} | {tuned.weight:g} | {where} |")
    lines += ["", *[f"- {label} kept: {why}" for label, why in result.kept.items()]]
    if result.before.tuning.guardrails:
        lines += ["", "## Guardrails", ""]
        lines += [f"- {g.metric} " + " and ".join(f"{word} {value:g}" for word, value in
                  (("at least", g.at_least), ("at most", g.at_most)) if value is not None)
                  for g in result.before.tuning.guardrails]  # fmt: skip
    return "\n".join(lines) + "\n"


def _history_plot(result: TuneResult) -> str:
    figure, axis = plt.subplots(figsize=(7, 3.2), dpi=110)
    numbers = np.array([t.number for t in result.trials])
    scores = np.array([t.score for t in result.trials])
    ok = np.array([t.feasible for t in result.trials], dtype=bool)
    axis.scatter(numbers[ok], scores[ok], s=12, color="C0", label="within the guardrails")
    axis.scatter(numbers[~ok], scores[~ok], s=12, color="C3", marker="x", label="outside the guardrails")
    best = np.maximum.accumulate(np.where(ok, scores, -np.inf))
    axis.step(numbers, best, where="post", color="C2", label="best so far")
    axis.axhline(result.alignment_before.score, color="grey", linewidth=0.8, linestyle="--", label="before")
    axis.set_xlabel("trial")
    axis.set_ylabel("alignment (tuning logs)")
    axis.legend(loc="lower right", fontsize=8)
    return figure_png(figure)


def _alignment_plot(result: TuneResult) -> str:
    comparisons = _comparisons(result)
    figure, axes = plt.subplots(1, len(comparisons), figsize=(7, 3.2), dpi=110, sharey=True, squeeze=False)
    positions = np.arange(len(SHOWN))
    for axis, (_, which, before, after) in zip(axes[0], comparisons, strict=True):
        axis.bar(positions - 0.2, [np.nan_to_num(before.metric(m)) for m in SHOWN], 0.4, label="before")
        axis.bar(positions + 0.2, [np.nan_to_num(after.metric(m)) for m in SHOWN], 0.4, label="after")
        axis.set_xticks(positions, SHOWN, rotation=20, fontsize=8)
        axis.set_title(which)
    axes[0][0].legend(loc="best", fontsize=8)
    return figure_png(figure)


def _weights_plot(result: TuneResult) -> str:
    labels = [c.label for c in result.before.components]
    figure, axis = plt.subplots(figsize=(7, 0.4 * len(labels) + 1), dpi=110)
    positions = np.arange(len(labels))
    axis.barh(positions - 0.2, [c.weight for c in result.before.components], 0.4, label="before")
    axis.barh(positions + 0.2, [c.weight for c in result.after.components], 0.4, label="after")
    axis.set_yticks(positions, labels)
    axis.axvline(0, color="grey", linewidth=0.8)
    axis.set_xlabel("weight")
    axis.legend(loc="best", fontsize=8)
    return figure_png(figure)


def write_tune_report(result: TuneResult, saved: Path) -> dict[str, Path]:
    """``<saved stem>.report.{json,md,html}`` beside the saved spec."""
    stem = saved.with_name(f"{saved.stem}.report")
    paths = {kind: stem.with_name(f"{stem.name}.{kind}") for kind in ("json", "md", "html")}
    paths["json"].write_text(json.dumps(to_json(result, saved), indent=2, default=float) + "\n")
    markdown = to_markdown(result, saved)
    paths["md"].write_text(markdown)
    plots = [
        ("alignment of each trial on the tuning logs, and the best so far", _history_plot(result)),
        ("alignment before and after tuning", _alignment_plot(result)),
        ("weights before and after tuning", _weights_plot(result)),
    ]
    paths["html"].write_text(html_page(f"Reward tuning {result.after.key}", markdown, plots))
    return paths
