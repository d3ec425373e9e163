"""Search a spec's weights for the best alignment with the north-star, under its guardrails (Optuna TPE).

Only components with a declared ``range`` move, and only those the tuning logs can inform: a
component whose columns no log has would only take its ``fill`` everywhere, so its weight is kept.
The current weights are the first trial, so the result is never worse on the tuning logs than
where it started. A trial is feasible when the reward stays bounded (within declared ``bounds``),
keeps every declared monotonicity on the tuning events and the probe tables (e.g. training
interactions, which have ratings), and meets the spec's guardrails. The held-out logs are never
seen by the search; the report measures before and after on them.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd

from reward_lib.alignment import Alignment, AlignmentData, align, measure, per_user_mean
from reward_lib.errors import RewardError
from reward_lib.rewards import component_matrix, output_range, spec_reward, weights
from reward_lib.signals import SIGNALS
from reward_lib.spec import OBJECTIVE_METRICS, Direction, RewardSpec
from reward_lib.validate import first_violation, sample_rows, shifted, validate

WEIGHT_DECIMALS = 3  # a tuned weight is written rounded, for a person to read


@dataclass(frozen=True)
class Trial:
    """One evaluated set of weights, with its alignment metrics on the tuning logs."""

    number: int
    weights: dict[str, float]
    score: float
    metrics: dict[str, float]
    feasible: bool
    violations: tuple[str, ...]


@dataclass(frozen=True)
class TuneResult:
    """Before and after, on the tuning logs and on the held-out ones, and every trial."""

    before: RewardSpec
    after: RewardSpec
    searched: tuple[str, ...]
    kept: dict[str, str]  # component -> why its weight was not searched
    alignment_before: Alignment
    alignment_after: Alignment
    holdout_before: Alignment | None
    holdout_after: Alignment | None
    trials: tuple[Trial, ...]
    seconds: float
    seed: int


@dataclass(frozen=True)
class _MonotoneProbe:
    """A table's component matrices at each shift of one column: the reward there is ``M_k @ w``."""

    column: str
    direction: Direction
    matrices: tuple[np.ndarray, ...]
    table: str


def _probes(spec: RewardSpec, tables: Sequence[tuple[str, pd.DataFrame]]) -> list[_MonotoneProbe]:
    probes = []
    for name, events in tables:
        sample = events.iloc[sample_rows(events)].reset_index(drop=True)
        for column, direction in spec.monotone.items():
            if column in events.columns:
                matrices = tuple(component_matrix(spec, table) for table in shifted(sample, column))
                probes.append(_MonotoneProbe(column, direction, matrices, name))
    return probes


def _searchable(
    spec: RewardSpec, logs: Sequence[AlignmentData]
) -> tuple[dict[str, tuple[int, float, float]], dict[str, str]]:
    """``label -> (index, low, high)`` of the components to search, and why each other one is kept."""
    searched: dict[str, tuple[int, float, float]] = {}
    kept: dict[str, str] = {}
    for index, component in enumerate(spec.components):
        columns = set(SIGNALS[component.signal].columns)
        if component.range is None:
            kept[component.label] = "no range declared"
        elif component.range[0] == component.range[1]:
            kept[component.label] = "its range is a single value"
        elif not any(columns <= set(log.events.columns) for log in logs):
            kept[component.label] = f"the tuning logs lack {', '.join(sorted(columns - set(logs[0].events.columns)))}"
        else:
            searched[component.label] = (index, *component.range)
    return searched, kept


def _violations(
    spec: RewardSpec, vector: np.ndarray, alignment: Alignment, probes: Sequence[_MonotoneProbe]
) -> list[str]:
    found = []
    low, high = output_range(spec, vector)
    if not (math.isfinite(low) and math.isfinite(high)):
        found.append(f"unbounded: values over [{low:g}, {high:g}]")
    elif spec.bounds is not None and (low < spec.bounds[0] or high > spec.bounds[1]):
        found.append(f"bounds: values over [{low:g}, {high:g}] leave the declared {list(spec.bounds)}")
    for probe in probes:
        if first_violation([matrix @ vector for matrix in probe.matrices], probe.direction) is not None:
            found.append(f"monotonicity: not {probe.direction} in {probe.column} on {probe.table}")
    for guardrail in spec.tuning.guardrails:
        value = alignment.metric(guardrail.metric)
        if guardrail.at_least is not None and not value >= guardrail.at_least:
            found.append(f"guardrail: {guardrail.metric} {value:.4g} < {guardrail.at_least:g}")
        if guardrail.at_most is not None and not value <= guardrail.at_most:
            found.append(f"guardrail: {guardrail.metric} {value:.4g} > {guardrail.at_most:g}")
    return found


def _trial(trial: optuna.trial.FrozenTrial) -> Trial:
    violations = tuple(trial.user_attrs["violations"])
    metrics = dict(trial.user_attrs["metrics"])
    return Trial(trial.number, dict(trial.params), float(trial.value or 0.0), metrics, not violations, violations)


def tune(
    spec: RewardSpec,
    logs: Sequence[AlignmentData],
    trials: int = 100,
    seed: int = 0,
    holdout: Sequence[AlignmentData] = (),
    probes: Sequence[tuple[str, pd.DataFrame]] = (),
    timeout_seconds: float | None = None,
    source: str = "tuned spec",
) -> TuneResult:
    """Tune ``spec``'s weights on ``logs``; ``probes`` are extra (name, event table) pairs for the
    monotonicity checks. The returned ``after`` spec keeps ``spec``'s version: the store numbers it."""
    if not logs:
        raise RewardError("tuning needs at least one A/B log")
    started = time.monotonic()
    before = spec_reward(spec, source)
    for log in logs:
        validate(before, log.events, f"tuning log {log.name}").raise_if_invalid()
    searched, kept = _searchable(spec, logs)
    if not searched:
        raise RewardError(f"{spec.key}: no weight to tune ({'; '.join(f'{k}: {v}' for k, v in kept.items())})")
    objective = spec.tuning.objective
    user_matrices = [per_user_mean(component_matrix(spec, log.events), log) for log in logs]
    monotone = _probes(spec, [(f"tuning log {log.name}", log.events) for log in logs] + list(probes))
    base = weights(spec)

    def vector_of(params: dict[str, float]) -> np.ndarray:
        vector = base.copy()
        for label, value in params.items():
            vector[searched[label][0]] = value
        return vector

    def alignment_of(vector: np.ndarray) -> Alignment:
        return Alignment(tuple(align(u @ vector, log) for u, log in zip(user_matrices, logs, strict=True)), objective)

    def objective_function(trial: optuna.Trial) -> float:
        vector = vector_of({label: trial.suggest_float(label, low, high) for label, (_, low, high) in searched.items()})
        alignment = alignment_of(vector)
        trial.set_user_attr("violations", _violations(spec, vector, alignment, monotone))
        trial.set_user_attr("metrics", {m: alignment.metric(m) for m in ("alignment", *OBJECTIVE_METRICS)})
        return alignment.score

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # constraints_func is marked experimental, and used as documented
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.TPESampler(
            seed=seed, constraints_func=lambda t: [float(len(t.user_attrs.get("violations", [1])))]
        )
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.enqueue_trial({label: base[index] for label, (index, _, _) in searched.items()})
    study.optimize(objective_function, n_trials=trials, timeout=timeout_seconds)
    try:
        best = study.best_trial
    except ValueError as exc:
        broken = "; ".join(study.trials[0].user_attrs.get("violations", []))
        raise RewardError(f"{spec.key}: no trial met the guardrails; the current weights break: {broken}") from exc
    tuned = {label: round(float(value), WEIGHT_DECIMALS) + 0.0 for label, value in best.params.items()}  # no -0.0
    rounded = vector_of(tuned)
    if _violations(spec, rounded, alignment_of(rounded), monotone):  # rounding must not break a constraint
        tuned = {label: float(value) for label, value in best.params.items()}
    after = spec.with_weights(tuned, spec.version, spec.key)
    tuned_reward = spec_reward(after, source)
    return TuneResult(
        before=spec,
        after=after,
        searched=tuple(searched),
        kept=kept,
        alignment_before=measure(before, logs),
        alignment_after=measure(tuned_reward, logs),
        holdout_before=measure(before, holdout) if holdout else None,
        holdout_after=measure(tuned_reward, holdout) if holdout else None,
        trials=tuple(_trial(t) for t in study.trials if t.value is not None),
        seconds=round(time.monotonic() - started, 2),
        seed=seed,
    )
