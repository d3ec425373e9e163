"""A/B statistics: false positives at α, the planned power, SRM, CUPED, peeking with mSPRT, Holm, the decision rule."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy import stats

from ab_testing.decision import Decision, MetricSpec, decide
from ab_testing.statistics import (
    Comparison,
    Method,
    SRMResult,
    cuped,
    cuped_welch,
    holm,
    holm_adjusted,
    mde_for,
    msprt,
    power_analysis,
    ratio_batch,
    ratio_test,
    srm_check,
    welch_batch,
    welch_test,
)

ALPHA = 0.05
AA_SIMULATIONS = 2000
POWER_SIMULATIONS = 1000
FALSE_POSITIVE_RANGE = (0.03, 0.07)  # α ± 4 binomial standard errors over 2,000 simulations
POWER_RANGE = (0.75, 0.85)  # 80% ± 4 binomial standard errors over 1,000 simulations
USERS_PER_ARM = 500


def _clicks(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-user clicks and impressions where users differ in click propensity (clustered, like real CTR)."""
    impressions = rng.poisson(8, shape) + 1
    propensity = rng.beta(1, 9, shape)
    return rng.binomial(impressions, propensity).astype(float), impressions.astype(float)


# --- fixed-horizon tests ---------------------------------------------------------------------------------


def test_welch_matches_scipy_and_its_interval_agrees_with_its_p_value() -> None:
    rng = np.random.default_rng(1)
    treatment, control = rng.normal(1.1, 1.0, 400), rng.normal(1.0, 2.0, 700)
    result = welch_test(treatment, control, ALPHA)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    interval = reference.confidence_interval(0.95)
    assert result.p_value == pytest.approx(reference.pvalue)
    assert result.df == pytest.approx(reference.df)
    assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))
    assert result.relative_lift == pytest.approx(treatment.mean() / control.mean() - 1)
    assert result.relative_ci_low < result.relative_lift < result.relative_ci_high

    many_t, many_c = rng.normal(0.05, 1.0, (300, 200)), rng.normal(0.0, 1.0, (300, 200))
    batch = welch_batch(many_t, many_c, ALPHA)
    excludes_zero = (batch.ci_low > 0) | (batch.ci_high < 0)
    np.testing.assert_array_equal(excludes_zero, batch.p_value < ALPHA)
    assert batch.row(7) == welch_test(many_t[7], many_c[7], ALPHA)


def test_welch_false_positive_rate_is_alpha_on_aa_normal_and_bernoulli_data() -> None:
    rng = np.random.default_rng(2)
    shape = (AA_SIMULATIONS, USERS_PER_ARM)
    normal = welch_batch(rng.lognormal(0, 0.5, shape), rng.lognormal(0, 0.5, shape), ALPHA)
    retained = welch_batch(rng.random(shape) < 0.3, rng.random(shape) < 0.3, ALPHA)
    for batch in (normal, retained):
        assert FALSE_POSITIVE_RANGE[0] <= batch.significant().mean() <= FALSE_POSITIVE_RANGE[1]
        relative_misses = (batch.relative_ci_low > 0) | (batch.relative_ci_high < 0)
        assert FALSE_POSITIVE_RANGE[0] <= relative_misses.mean() <= FALSE_POSITIVE_RANGE[1]


def test_ratio_test_false_positive_rate_is_alpha_where_a_per_impression_test_is_not() -> None:
    rng = np.random.default_rng(3)
    shape = (AA_SIMULATIONS, USERS_PER_ARM)
    clicks_t, impressions_t = _clicks(rng, shape)
    clicks_c, impressions_c = _clicks(rng, shape)
    batch = ratio_batch(clicks_t, impressions_t, clicks_c, impressions_c, ALPHA)
    assert FALSE_POSITIVE_RANGE[0] <= batch.significant().mean() <= FALSE_POSITIVE_RANGE[1]
    relative_misses = (batch.relative_ci_low > 0) | (batch.relative_ci_high < 0)
    assert FALSE_POSITIVE_RANGE[0] <= relative_misses.mean() <= FALSE_POSITIVE_RANGE[1]

    # Treating impressions as independent Bernoulli trials ignores that a user's clicks go together.
    k_t, n_t, k_c, n_c = (a.sum(axis=1) for a in (clicks_t, impressions_t, clicks_c, impressions_c))
    pooled = (k_t + k_c) / (n_t + n_c)
    z = (k_t / n_t - k_c / n_c) / np.sqrt(pooled * (1 - pooled) * (1 / n_t + 1 / n_c))
    assert (2 * stats.norm.sf(np.abs(z)) < ALPHA).mean() > 0.1


def test_ratio_test_delta_method_standard_error_matches_the_spread_over_simulations() -> None:
    rng = np.random.default_rng(4)
    shape = (AA_SIMULATIONS, USERS_PER_ARM)
    batch = ratio_batch(*_clicks(rng, shape), *_clicks(rng, shape), ALPHA)
    assert batch.std_error.mean() == pytest.approx(batch.difference.std(), rel=0.05)
    clicks_t, impressions_t = _clicks(rng, (1, 300))
    clicks_c, impressions_c = _clicks(rng, (1, 400))
    single = ratio_test(clicks_t[0], impressions_t[0], clicks_c[0], impressions_c[0], ALPHA)
    assert single == ratio_batch(clicks_t, impressions_t, clicks_c, impressions_c, ALPHA).row(0)
    assert single.mean_treatment == pytest.approx(clicks_t.sum() / impressions_t.sum())


def test_injected_effect_is_detected_at_the_planned_power() -> None:
    rng = np.random.default_rng(5)
    mean, std, mde = 10.0, 4.0, 0.03
    n = power_analysis(mean, std, mde, ALPHA, 0.8)
    treatment = rng.normal(mean * (1 + mde), std, (POWER_SIMULATIONS, n))
    control = rng.normal(mean, std, (POWER_SIMULATIONS, n))
    batch = welch_batch(treatment, control, ALPHA)
    detected = batch.significant() & (batch.difference > 0)
    assert POWER_RANGE[0] <= detected.mean() <= POWER_RANGE[1]


def test_power_analysis_matches_a_hand_computed_size_and_inverts_mde_for() -> None:
    # 2 (1.959964 + 0.841621)² / 0.1² = 1569.8
    assert power_analysis(1.0, 1.0, 0.1, 0.05, 0.8) == 1570
    assert mde_for(1570, 1.0, 0.05, 0.8) == pytest.approx(0.1, rel=1e-3)
    with pytest.raises(ValueError, match="baseline mean"):
        power_analysis(0.0, 1.0, 0.1)


def test_degenerate_data_gives_an_error_result_that_is_never_significant() -> None:
    constant = welch_test([2.0, 2.0, 2.0], [2.0, 2.0])
    assert constant.error == "no variance in either arm"
    assert not constant.significant and constant.p_value == 1.0
    no_impressions = ratio_test([0, 0], [0, 0], [1, 2], [3, 4])
    assert no_impressions.error is not None and not no_impressions.significant
    with pytest.raises(ValueError, match="NaN"):
        welch_test([1.0, math.nan], [1.0, 2.0])


# --- SRM -------------------------------------------------------------------------------------------------


def test_srm_flags_a_52_48_split_of_a_50_50_plan() -> None:
    result = srm_check([10_400, 9_600], [0.5, 0.5])
    assert result.mismatch
    assert result.statistic == pytest.approx(32.0)


def test_srm_flags_broken_assignment_but_rarely_a_fair_one() -> None:
    rng = np.random.default_rng(6)
    users = 20_000
    in_treatment = rng.random(users) < 0.5
    # The bug: 8% of the treatment's users crash before their first exposure is logged.
    logged = ~in_treatment | (rng.random(users) > 0.08)
    broken = srm_check([int((in_treatment & logged).sum()), int((~in_treatment).sum())], [0.5, 0.5])
    assert broken.mismatch

    fair_counts = rng.binomial(users, 0.5, 1000)
    flagged = [srm_check([int(k), users - int(k)], [0.5, 0.5]).mismatch for k in fair_counts]
    assert np.mean(flagged) <= 0.005


# --- CUPED -----------------------------------------------------------------------------------------------


def test_cuped_shrinks_variance_and_interval_on_the_same_data() -> None:
    rng = np.random.default_rng(7)
    pre_t, pre_c = rng.normal(5, 2, 3000), rng.normal(5, 2, 3000)
    treatment = 0.8 * pre_t + rng.normal(1.1, 1, 3000)
    control = 0.8 * pre_c + rng.normal(1.0, 1, 3000)
    plain = welch_test(treatment, control, ALPHA)
    adjusted = cuped_welch(treatment, control, pre_t, pre_c, ALPHA)
    pooled_y = np.concatenate([treatment, control])
    pooled_x = np.concatenate([pre_t, pre_c])
    values, theta = cuped(pooled_y, pooled_x)
    assert values.var() < 0.5 * pooled_y.var()
    assert adjusted.ci_high - adjusted.ci_low < 0.7 * (plain.ci_high - plain.ci_low)
    assert adjusted.method == "cuped" and adjusted.theta == pytest.approx(theta)
    assert adjusted.variance_reduction == pytest.approx(1 - (adjusted.std_error / plain.std_error) ** 2)
    assert adjusted.variance_reduction is not None and adjusted.variance_reduction > 0.5
    assert adjusted.difference == pytest.approx(plain.difference, abs=3 * plain.std_error)


def test_cuped_theta_is_pooled_cov_over_var_and_keeps_the_mean() -> None:
    rng = np.random.default_rng(8)
    covariate = rng.gamma(2.0, 1.0, 1000)
    metric = 0.5 * covariate + rng.normal(0, 1, 1000)
    adjusted, theta = cuped(metric, covariate)
    assert theta == pytest.approx(np.cov(metric, covariate)[0, 1] / covariate.var(ddof=1))
    assert adjusted.mean() == pytest.approx(metric.mean())
    assert cuped(metric, np.ones(1000))[1] == 0.0


def test_cuped_keeps_the_false_positive_rate() -> None:
    rng = np.random.default_rng(9)
    rejections = 0
    simulations = 1000
    for _ in range(simulations):
        pre = rng.normal(0, 1, (2, 200))
        post = 0.7 * pre + rng.normal(0, 1, (2, 200))
        rejections += cuped_welch(post[0], post[1], pre[0], pre[1], ALPHA).significant
    assert 0.03 <= rejections / simulations <= 0.07


# --- always-valid sequential tests -----------------------------------------------------------------------


def test_msprt_keeps_alpha_under_daily_peeking_where_repeated_welch_tests_do_not() -> None:
    rng = np.random.default_rng(10)
    looks, per_look = 10, 100
    data = rng.normal(0, 1, (AA_SIMULATIONS, 2, looks, per_look))
    msprt_rejections = np.mean(
        [msprt(list(sim[0]), list(sim[1]), ALPHA, tau=0.1).stopped_at is not None for sim in data]
    )
    naive = np.zeros(AA_SIMULATIONS, dtype=bool)
    for look in range(1, looks + 1):
        so_far = data[:, :, :look].reshape(AA_SIMULATIONS, 2, -1)
        naive |= welch_batch(so_far[:, 0], so_far[:, 1], ALPHA).significant()
    assert msprt_rejections <= ALPHA + 0.01
    assert naive.mean() > 2 * ALPHA


def test_msprt_stops_early_on_a_large_effect_and_its_sequence_covers_it() -> None:
    rng = np.random.default_rng(11)
    effect = 0.3
    treatment = [rng.normal(effect, 1, 200) for _ in range(10)]
    control = [rng.normal(0, 1, 200) for _ in range(10)]
    result = msprt(treatment, control, ALPHA, tau=effect)
    assert result.stopped_early and result.stopped_at is not None and result.stopped_at <= 3
    assert result.final.look == result.stopped_at and result.final.p_value <= ALPHA
    assert all(look.ci_low <= effect <= look.ci_high for look in result.looks)
    comparison = result.to_comparison()
    assert comparison.method == "msprt" and comparison.significant and comparison.ci_low > 0


def test_msprt_p_values_never_rise_and_sequences_only_narrow() -> None:
    rng = np.random.default_rng(12)
    result = msprt([rng.normal(0.05, 1, 50) for _ in range(20)], [rng.normal(0, 1, 50) for _ in range(20)], tau=0.1)
    p_values = [look.p_value for look in result.looks]
    widths = [look.ci_high - look.ci_low for look in result.looks]
    assert all(later <= earlier for earlier, later in itertools.pairwise(p_values))
    assert all(later <= earlier for earlier, later in itertools.pairwise(widths))
    assert result.looks[-1].n_treatment == 1000


def test_msprt_cumulative_snapshots_give_the_same_result_as_increments() -> None:
    rng = np.random.default_rng(13)
    increments = [(rng.normal(0.2, 1, 80), rng.normal(0, 1, 90)) for _ in range(5)]
    snapshots = [
        (np.concatenate([t for t, _ in increments[: k + 1]]), np.concatenate([c for _, c in increments[: k + 1]]))
        for k in range(5)
    ]
    by_increment = msprt([t for t, _ in increments], [c for _, c in increments], tau=0.2)
    by_snapshot = msprt([t for t, _ in snapshots], [c for _, c in snapshots], tau=0.2, cumulative=True)
    for a, b in zip(by_increment.looks, by_snapshot.looks, strict=True):
        assert a.p_value == pytest.approx(b.p_value)
        assert (a.ci_low, a.ci_high) == pytest.approx((b.ci_low, b.ci_high))


# --- Holm ------------------------------------------------------------------------------------------------


def test_holm_matches_a_hand_worked_example() -> None:
    # Sorted: d .005 x4 = .02, a .01 x3 = .03, c .03 x2 = .06, b .04 x1 = .04 -> running max .06.
    p_values = {"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005}
    assert holm_adjusted(p_values) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    assert holm(p_values, 0.05) == {"a": True, "b": False, "c": False, "d": True}


@given(st.dictionaries(st.text(min_size=1, max_size=3), st.floats(0, 1), min_size=1, max_size=8))
def test_holm_adjusted_p_values_bound_the_raw_ones_and_reject_at_least_what_bonferroni_does(
    p_values: dict[str, float],
) -> None:
    adjusted = holm_adjusted(p_values)
    rejected = holm(p_values, ALPHA)
    for name, p in p_values.items():
        assert p <= adjusted[name] <= 1
        assert rejected[name] == (adjusted[name] <= ALPHA)
        if p * len(p_values) <= ALPHA:
            assert rejected[name]


# --- the decision rule -----------------------------------------------------------------------------------

SPECS = [
    MetricSpec(name="D7 retention", kind="north_star"),
    MetricSpec(name="D14 retention", kind="north_star"),
    MetricSpec(name="CTR", kind="proxy", test="ratio"),
    MetricSpec(name="diversity", kind="guardrail", non_inferiority_margin=0.02),
    MetricSpec(name="p99 latency", kind="guardrail", direction="decrease", non_inferiority_margin=0.05),
]
FAIR = srm_check([10_030, 9_970], [0.5, 0.5])


def _comparison(lift: float, low: float, high: float, p: float, method: Method = "welch") -> Comparison:
    """A crafted result on a metric whose control mean is 1 (so absolute and relative effects agree)."""
    return Comparison(
        method=method,
        alpha=ALPHA,
        n_treatment=10_000,
        n_control=10_000,
        mean_treatment=1 + lift,
        mean_control=1.0,
        difference=lift,
        std_error=(high - low) / 3.92,
        df=math.inf,
        ci_low=low,
        ci_high=high,
        p_value=p,
        relative_lift=lift,
        relative_ci_low=low,
        relative_ci_high=high,
    )


def _results(overrides: dict[str, Comparison] | None = None) -> dict[str, Comparison]:
    results = {
        "D7 retention": _comparison(0.012, 0.004, 0.020, 0.003),
        "D14 retention": _comparison(0.005, -0.004, 0.014, 0.2),
        "CTR": _comparison(0.03, 0.01, 0.05, 0.001, method="ratio"),
        "diversity": _comparison(-0.003, -0.011, 0.005, 0.5),
        "p99 latency": _comparison(0.01, -0.02, 0.04, 0.5),
    }
    return {**results, **(overrides or {})}


def test_decision_ships_a_significant_north_star_with_sound_guardrails() -> None:
    decision = decide(_results(), SPECS, FAIR, ALPHA)
    assert isinstance(decision, Decision) and decision.ship
    assert decision.north_star_adjusted_p == pytest.approx({"D7 retention": 0.006, "D14 retention": 0.2})
    assert decision.better_north_stars == ("D7 retention",)
    assert decision.reasons[0].startswith("Ship:")
    assert "D7 retention +1.2% (95% CI +0.4% .. +2.0%), p=0.006 after Holm: better" in decision.reasons


def test_decision_refuses_on_a_sample_ratio_mismatch() -> None:
    decision = decide(_results(), SPECS, srm_check([10_400, 9_600], [0.5, 0.5]), ALPHA)
    assert not decision.ship and decision.srm
    assert "sample ratio mismatch" in decision.reasons[0]


def test_decision_refuses_when_a_guardrail_breaks_its_margin() -> None:
    slower = _comparison(0.075, 0.06, 0.09, 0.0001)  # p99 latency +7.5%, entirely beyond the 5% margin
    decision = decide(_results({"p99 latency": slower}), SPECS, FAIR, ALPHA)
    assert not decision.ship and decision.failed_guardrails == ("p99 latency",)
    assert any("significantly worse than its 5.0% non-inferiority margin" in reason for reason in decision.reasons)


def test_decision_refuses_a_guardrail_too_noisy_to_show_non_inferiority_unless_told_otherwise() -> None:
    noisy = _comparison(-0.01, -0.04, 0.02, 0.5)  # diversity could have fallen 4%, the margin is 2%
    strict = decide(_results({"diversity": noisy}), SPECS, FAIR, ALPHA)
    lenient = decide(_results({"diversity": noisy}), SPECS, FAIR, ALPHA, guardrail_rule="no_significant_harm")
    assert not strict.ship and strict.failed_guardrails == ("diversity",)
    assert lenient.ship


def test_decision_refuses_when_no_north_star_is_significant_after_holm() -> None:
    # Each p < .05 alone, but Holm over two north stars makes them .06 and .06.
    results = _results(
        {
            "D7 retention": _comparison(0.01, 0.001, 0.019, 0.03),
            "D14 retention": _comparison(0.01, 0.0005, 0.0195, 0.04),
        }
    )
    decision = decide(results, SPECS, FAIR, ALPHA)
    assert not decision.ship and decision.better_north_stars == ()
    assert decision.north_star_adjusted_p == pytest.approx({"D7 retention": 0.06, "D14 retention": 0.06})
    assert "no north-star metric is significantly better" in decision.reasons[0]


def test_decision_refuses_a_significantly_worse_north_star() -> None:
    results = _results({"D14 retention": _comparison(-0.02, -0.03, -0.01, 0.0001)})
    decision = decide(results, SPECS, FAIR, ALPHA)
    assert not decision.ship
    assert any("D14 retention" in reason and "significantly worse" in reason for reason in decision.reasons)


def test_decision_rejects_results_from_another_test_than_the_registered_one() -> None:
    with pytest.raises(ValueError, match="registered for a ratio test"):
        decide(_results({"CTR": _comparison(0.03, 0.01, 0.05, 0.001)}), SPECS, FAIR, ALPHA)
    with pytest.raises(ValidationError, match="non_inferiority_margin"):
        MetricSpec(name="coverage", kind="guardrail")


def test_decision_on_simulated_data_ships_a_real_improvement() -> None:
    rng = np.random.default_rng(14)
    users = 20_000
    specs = [
        MetricSpec(name="active days", kind="north_star", test="cuped"),
        MetricSpec(name="CTR", kind="proxy", test="ratio"),
        MetricSpec(name="diversity", kind="guardrail", non_inferiority_margin=0.02),
    ]
    pre = rng.poisson(3, (2, users)).astype(float)
    active = pre + rng.poisson(1, (2, users))
    active[0] += rng.random(users) < 0.15  # treatment: 15% of users come back one more day
    clicks_t, impressions_t = _clicks(rng, (1, users))
    clicks_c, impressions_c = _clicks(rng, (1, users))
    diversity = rng.normal(0.6, 0.1, (2, users))
    results = {
        "active days": cuped_welch(active[0], active[1], pre[0], pre[1], ALPHA),
        "CTR": ratio_test(clicks_t[0], impressions_t[0], clicks_c[0], impressions_c[0], ALPHA),
        "diversity": welch_test(diversity[0], diversity[1], ALPHA),
    }
    srm: SRMResult = srm_check([users, users], [0.5, 0.5])
    decision = decide(results, specs, srm, ALPHA)
    assert decision.ship, decision.reasons


def test_the_relative_lift_of_a_better_treatment_is_positive_even_below_zero():
    from ab_testing.statistics import welch_test

    rng = np.random.default_rng(3)
    better = welch_test(rng.normal(-0.5, 0.1, 500), rng.normal(-0.6, 0.1, 500))
    assert better.difference > 0 and better.relative_lift > 0 and better.relative_ci_low > 0
