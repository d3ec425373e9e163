"""The pre-registered decision rule of an experiment: ship, or not, and every reason as a sentence.

Ship only if the assignment is sound (no sample ratio mismatch), at least one north-star metric is
significantly better after Holm's correction across the north stars (and none significantly
worse), and every guardrail stays within its non-inferiority margin. Proxies are reported but do
not decide: they move easily and are what a candidate could game. The metrics and margins are
fixed before the experiment runs (``MetricSpec``), so the rule cannot be bent to fit the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ab_testing.statistics import DEFAULT_ALPHA, Comparison, SRMResult, holm_adjusted

MetricKind = Literal["north_star", "proxy", "guardrail"]
Direction = Literal["increase", "decrease"]
TestName = Literal["welch", "ratio", "cuped", "msprt"]
GuardrailRule = Literal["non_inferiority", "no_significant_harm"]


class MetricSpec(BaseModel):
    """One pre-registered metric: its role, which way is better, its test and, for a guardrail, its margin.

    ``non_inferiority_margin`` is relative to the control mean: 0.02 tolerates a 2% loss (a 2%
    rise, for a metric that should ``decrease`` such as latency).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    kind: MetricKind
    direction: Direction = "increase"
    non_inferiority_margin: float | None = Field(default=None, ge=0)
    test: TestName = "welch"

    @model_validator(mode="after")
    def _margin_for_guardrails_only(self) -> MetricSpec:
        if self.kind == "guardrail" and self.non_inferiority_margin is None:
            raise ValueError(f"guardrail {self.name!r} needs a non_inferiority_margin (relative, e.g. 0.02)")
        if self.kind != "guardrail" and self.non_inferiority_margin is not None:
            raise ValueError(f"{self.name!r} is a {self.kind}: only guardrails take a non_inferiority_margin")
        return self


@dataclass(frozen=True)
class Decision:
    """The verdict, its reasons (readable sentences, the verdict first), and the numbers behind it."""

    ship: bool
    reasons: tuple[str, ...]
    north_star_adjusted_p: Mapping[str, float]
    better_north_stars: tuple[str, ...]
    failed_guardrails: tuple[str, ...]
    srm: bool


def decide(
    results: Mapping[str, Comparison],
    specs: Sequence[MetricSpec],
    srm: SRMResult,
    alpha: float = DEFAULT_ALPHA,
    *,
    guardrail_rule: GuardrailRule = "non_inferiority",
) -> Decision:
    """Apply the decision rule to an experiment's results.

    A guardrail is checked on the bound of its relative CI on the harmful side (the lower bound
    for an ``increase`` metric): with ``"non_inferiority"`` (the default) that bound must lie
    within the margin, so a guardrail too noisy to show it does no harm blocks the launch; with
    ``"no_significant_harm"`` only a CI entirely beyond the margin does. A two-sided (1 − α) CI
    makes either a one-sided test at α/2. Guardrails are not corrected for multiplicity: a
    correction would make breaches harder to see.

    Args:
        results: a ``Comparison`` per metric name, produced by the metric's pre-registered test.
        specs: the pre-registered metrics; at least one north star. Results without a spec are ignored.
        srm: the sample ratio check of the same experiment.
        alpha: the family-wise level of the north stars' Holm correction.
        guardrail_rule: how a guardrail passes, see above.

    Raises:
        ValueError: the specs or results do not fit the plan (no north star, a missing result, a
            result from another test than the registered one, duplicate names).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    _check_plan(results, specs)
    north_stars = [spec for spec in specs if spec.kind == "north_star"]
    guardrails = [spec for spec in specs if spec.kind == "guardrail"]
    proxies = [spec for spec in specs if spec.kind == "proxy"]

    adjusted = holm_adjusted({spec.name: results[spec.name].p_value for spec in north_stars})
    better: list[str] = []
    worse: list[str] = []
    sentences: list[str] = []
    for spec in north_stars:
        result = results[spec.name]
        verdict, effect = _north_star_verdict(spec, result, adjusted[spec.name], alpha)
        if verdict == "better":
            better.append(spec.name)
        elif verdict == "significantly worse":
            worse.append(spec.name)
        sentences.append(f"{effect}, p={_p(adjusted[spec.name])} after Holm: {verdict}")

    failed: list[str] = []
    for spec in guardrails:
        passed, sentence = _guardrail(spec, results[spec.name], guardrail_rule)
        if not passed:
            failed.append(spec.name)
        sentences.append(sentence)

    for spec in proxies:
        result = results[spec.name]
        sentences.append(f"{_effect(spec.name, result)}, p={_p(result.p_value)}: proxy, reported only")

    ship = not srm.mismatch and bool(better) and not worse and not failed
    verdict = _verdict(ship, srm, better, worse, failed, alpha)
    return Decision(
        ship=ship,
        reasons=(verdict, _srm_sentence(srm), *sentences),
        north_star_adjusted_p=adjusted,
        better_north_stars=tuple(better),
        failed_guardrails=tuple(failed),
        srm=srm.mismatch,
    )


def _check_plan(results: Mapping[str, Comparison], specs: Sequence[MetricSpec]) -> None:
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names must be distinct, got {names}")
    if not any(spec.kind == "north_star" for spec in specs):
        raise ValueError("the decision rule needs at least one north-star metric")
    missing = [name for name in names if name not in results]
    if missing:
        raise ValueError(f"no result for the pre-registered metrics {missing}")
    for spec in specs:
        method = results[spec.name].method
        if method != spec.test:
            raise ValueError(f"{spec.name!r} was registered for a {spec.test} test but its result comes from {method}")


def _north_star_verdict(spec: MetricSpec, result: Comparison, adjusted_p: float, alpha: float) -> tuple[str, str]:
    effect = _effect(spec.name, result)
    if result.error is not None:
        return f"cannot be judged ({result.error})", effect
    if adjusted_p > alpha:
        return f"not significant at α={alpha:g}", effect
    improved = result.difference > 0 if spec.direction == "increase" else result.difference < 0
    return ("better" if improved else "significantly worse"), effect


def _guardrail(spec: MetricSpec, result: Comparison, rule: GuardrailRule) -> tuple[bool, str]:
    """Whether the guardrail passes, and the sentence that says why."""
    margin = spec.non_inferiority_margin or 0.0
    effect = _effect(spec.name, result)
    allowed = f"its {margin:.1%} non-inferiority margin"
    low, high = result.relative_ci_low, result.relative_ci_high
    if result.error is not None or math.isnan(low) or math.isnan(high):
        reason = result.error or "the control mean is 0, so a relative margin has no meaning"
        return False, f"{effect}: cannot be checked against {allowed} ({reason}): failed"
    # Signed so that "harm" is negative: the harmful bound and the far bound of the CI.
    if spec.direction == "increase":
        harmful_bound, far_bound, limit = low, high, -margin
        beyond = harmful_bound <= limit, far_bound < limit
    else:
        harmful_bound, far_bound, limit = high, low, margin
        beyond = harmful_bound >= limit, far_bound > limit
    could_breach, surely_breaches = beyond
    if surely_breaches:
        return False, f"{effect}: significantly worse than {allowed}: failed"
    if could_breach and rule == "non_inferiority":
        return False, (
            f"{effect}: not shown within {allowed} (the CI reaches {_pct(harmful_bound)} against a limit of "
            f"{_pct(limit)}): failed"
        )
    return True, f"{effect}: within {allowed}: passed"


def _verdict(ship: bool, srm: SRMResult, better: list[str], worse: list[str], failed: list[str], alpha: float) -> str:
    if ship:
        return (
            f"Ship: {_names(better)} significantly better, every guardrail within its margin, no sample ratio mismatch."
        )
    causes = []
    if srm.mismatch:
        causes.append("a sample ratio mismatch means the assignment is broken")
    if worse:
        causes.append(f"{_names(worse)} significantly worse")
    if not better:
        causes.append(f"no north-star metric is significantly better at α={alpha:g} after Holm")
    if failed:
        causes.append(f"{'guardrail' if len(failed) == 1 else 'guardrails'} {_names(failed)} failed")
    return f"Do not ship: {'; '.join(causes)}."


def _srm_sentence(srm: SRMResult) -> str:
    counts = "/".join(str(count) for count in srm.observed)
    shares = "/".join(f"{share:.0%}" for share in srm.expected_shares)
    if srm.mismatch:
        return (
            f"Sample ratio mismatch: {counts} users against a planned {shares} split, chi-square p={_p(srm.p_value)} "
            f"< {srm.alpha:g}: the assignment or logging is broken and no metric can be trusted"
        )
    return f"No sample ratio mismatch: {counts} users against a planned {shares} split, p={_p(srm.p_value)}"


def _effect(name: str, result: Comparison) -> str:
    """'D7 retention +1.2% (95% CI +0.4% .. +2.0%)', or the absolute difference when no lift exists."""
    label = f"{1 - result.alpha:.0%} {'always-valid ' if result.method == 'msprt' else ''}CI"
    if math.isnan(result.relative_lift):
        return f"{name} {result.difference:+.3g} ({label} {result.ci_low:+.3g} .. {result.ci_high:+.3g})"
    return (
        f"{name} {_pct(result.relative_lift)} ({label} {_pct(result.relative_ci_low)} .. "
        f"{_pct(result.relative_ci_high)})"
    )


def _pct(value: float) -> str:
    return f"{value:+.1%}"


def _p(value: float) -> str:
    return f"{value:.2g}"


def _names(names: list[str]) -> str:
    return ", ".join(names)
