"""The statistics of A/B experiments: fixed-horizon tests, CUPED, always-valid sequential tests, SRM, Holm, power.

Pure functions over arrays of per-unit values (one value per user, the randomisation unit) that
return frozen dataclasses; no I/O. Degenerate data (an arm with fewer than two users, no variance,
a zero mean denominator) gives a result whose ``error`` says why and which is never significant,
rather than an exception, so that a report still renders; invalid arguments (α outside (0, 1),
mismatched shapes, non-finite values) raise ``ValueError``.

The ``*_batch`` functions run many independent tests at once (simulations, power studies) and are
what the single-test functions call, so checking one checks the other.

References: Welch (1947); Deng, Knoblich & Lu (2018), "Applying the delta method in metric
analytics"; Deng et al. (2013), "Improving the sensitivity of online controlled experiments by
utilizing pre-experiment data" (CUPED); Johari, Pekelis & Walsh (2017), "Always valid inference";
Holm (1979).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final, Literal

import numpy as np
import numpy.typing as npt
from scipy import special, stats

DEFAULT_ALPHA: Final = 0.05
DEFAULT_POWER: Final = 0.8
SRM_ALPHA: Final = 0.001  # strict on purpose: the check runs on every experiment and an alarm discards it
MIN_UNITS: Final = 2  # a sample variance needs two units
SHARE_TOLERANCE: Final = 1e-6  # expected shares must sum to 1 within this
RELATIVE_TINY: Final = 1e-12  # a standard error below this fraction of the means' scale counts as zero

Method = Literal["welch", "ratio", "cuped", "msprt"]
FloatArray = npt.NDArray[np.float64]

NO_UNITS = f"fewer than {MIN_UNITS} users in an arm"
NO_VARIANCE = "no variance in either arm"
ZERO_DENOMINATOR = "the mean denominator of an arm is zero"
_RATIO_NAMES = ("num_t", "den_t", "num_c", "den_c")


@dataclass(frozen=True)
class Comparison:
    """Treatment against control on one metric: the effect, its uncertainty and its p-value.

    For a ratio metric the "means" are the arms' ratios (sum of numerators over sum of
    denominators). ``relative_*`` is the difference over |control| (0.012 = +1.2%, positive when the
    treatment is higher even for a negative control mean), with a delta-method
    interval; it is NaN when the control mean is 0. A result with an ``error`` has p-value 1 and
    infinite intervals: it can never be significant, nor show non-inferiority.

    Args:
        method: the test that produced it.
        alpha: the two-sided level of the intervals (0.05 gives 95% intervals).
        std_error: standard error of ``difference``.
        df: degrees of freedom of the t reference distribution (``inf`` for a z-test).
        theta: the CUPED coefficient (CUPED only).
        variance_reduction: the share of the difference's variance CUPED removed (CUPED only).
    """

    method: Method
    alpha: float
    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    difference: float
    std_error: float
    df: float
    ci_low: float
    ci_high: float
    p_value: float
    relative_lift: float
    relative_ci_low: float
    relative_ci_high: float
    theta: float | None = None
    variance_reduction: float | None = None
    error: str | None = None

    @property
    def significant(self) -> bool:
        """The two-sided test rejects "no difference" at ``alpha``."""
        return self.error is None and self.p_value <= self.alpha


@dataclass(frozen=True)
class BatchComparison:
    """``B`` independent two-sample tests at once: the fields of ``Comparison``, each an array of shape ``B``.

    ``error`` holds "" for a sound test, or the reason it is degenerate.
    """

    method: Method
    alpha: float
    n_treatment: int
    n_control: int
    mean_treatment: FloatArray
    mean_control: FloatArray
    difference: FloatArray
    std_error: FloatArray
    df: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    p_value: FloatArray
    relative_lift: FloatArray
    relative_ci_low: FloatArray
    relative_ci_high: FloatArray
    error: npt.NDArray[np.str_]

    def significant(self) -> npt.NDArray[np.bool_]:
        """``B`` flags: the test rejects "no difference" at ``alpha``."""
        flags: npt.NDArray[np.bool_] = (self.p_value <= self.alpha) & (self.error == "")
        return flags

    def row(self, index: int) -> Comparison:
        """One of the tests, as a ``Comparison``."""
        error = str(self.error[index])
        return Comparison(
            method=self.method,
            alpha=self.alpha,
            n_treatment=self.n_treatment,
            n_control=self.n_control,
            mean_treatment=float(self.mean_treatment[index]),
            mean_control=float(self.mean_control[index]),
            difference=float(self.difference[index]),
            std_error=float(self.std_error[index]),
            df=float(self.df[index]),
            ci_low=float(self.ci_low[index]),
            ci_high=float(self.ci_high[index]),
            p_value=float(self.p_value[index]),
            relative_lift=float(self.relative_lift[index]),
            relative_ci_low=float(self.relative_ci_low[index]),
            relative_ci_high=float(self.relative_ci_high[index]),
            error=error or None,
        )


@dataclass(frozen=True)
class SampleStats:
    """Sufficient statistics of a sample (count, mean, sum of squared deviations) that add up.

    Adding uses Chan et al.'s pairwise update, which stays accurate where ``sum`` and ``sum of
    squares`` would cancel catastrophically (large means, small spread).
    """

    n: int
    mean: float
    m2: float

    @classmethod
    def from_values(cls, values: npt.ArrayLike) -> SampleStats:
        data = _as_1d(values, "values", allow_empty=True)
        if data.size == 0:
            return cls(0, 0.0, 0.0)
        mean = float(data.mean())
        return cls(int(data.size), mean, float(((data - mean) ** 2).sum()))

    def __add__(self, other: SampleStats) -> SampleStats:
        n = self.n + other.n
        if n == 0:
            return self
        delta = other.mean - self.mean
        mean = self.mean + delta * other.n / n
        return SampleStats(n, mean, self.m2 + other.m2 + delta**2 * self.n * other.n / n)

    @property
    def variance(self) -> float:
        """The unbiased sample variance (NaN below two units)."""
        return self.m2 / (self.n - 1) if self.n >= MIN_UNITS else math.nan


# --- fixed-horizon tests ---------------------------------------------------------------------------------


def welch_test(treatment: npt.ArrayLike, control: npt.ArrayLike, alpha: float = DEFAULT_ALPHA) -> Comparison:
    """Welch's t-test on the difference of means: no equal-variance assumption, since a change moves both.

    Args:
        treatment: ``N_t`` per-user values of the treatment arm.
        control: ``N_c`` per-user values of the control arm.
        alpha: two-sided level.

    Example::

        welch_test([1.0, 2.0, 3.0], [1.0, 1.5, 2.0]).p_value
    """
    return welch_batch(_as_1d(treatment, "treatment")[None, :], _as_1d(control, "control")[None, :], alpha).row(0)


def welch_batch(treatment: npt.ArrayLike, control: npt.ArrayLike, alpha: float = DEFAULT_ALPHA) -> BatchComparison:
    """``B`` Welch tests at once; the p-value, Welch–Satterthwaite df and CI come from ``scipy.stats.ttest_ind``.

    Args:
        treatment: ``B X N_t`` per-user values, one row per test.
        control: ``B X N_c`` per-user values.
        alpha: two-sided level.
    """
    _check_alpha(alpha)
    t_values = _as_2d(treatment, "treatment")
    c_values = _as_2d(control, "control")
    _check_same_batch(t_values, c_values)
    n_t, n_c = t_values.shape[1], c_values.shape[1]
    mean_t = t_values.mean(axis=1) if n_t else np.full(t_values.shape[0], math.nan)
    mean_c = c_values.mean(axis=1) if n_c else np.full(c_values.shape[0], math.nan)
    if min(n_t, n_c) < MIN_UNITS:
        nan = np.full(t_values.shape[0], math.nan)
        return _assemble("welch", alpha, n_t, n_c, mean_t, mean_c, nan, nan, nan, _errors(nan, NO_UNITS))
    var_mean_t = t_values.var(axis=1, ddof=1) / n_t
    var_mean_c = c_values.var(axis=1, ddof=1) / n_c
    errors = _errors(mean_t, "")
    errors[_vanishing(var_mean_t + var_mean_c, mean_t, mean_c)] = NO_VARIANCE
    ok = errors == ""
    df = np.full(mean_t.shape, math.nan)
    p_value = np.ones(mean_t.shape)
    ci_low = np.full(mean_t.shape, -math.inf)
    ci_high = np.full(mean_t.shape, math.inf)
    if ok.any():
        result = stats.ttest_ind(t_values[ok], c_values[ok], axis=1, equal_var=False)
        interval = result.confidence_interval(confidence_level=1 - alpha)
        df[ok], p_value[ok] = result.df, result.pvalue
        ci_low[ok], ci_high[ok] = interval.low, interval.high
    return _assemble(
        "welch", alpha, n_t, n_c, mean_t, mean_c, var_mean_t, var_mean_c, df, errors, p_value, ci_low, ci_high
    )


def ratio_test(
    num_t: npt.ArrayLike,
    den_t: npt.ArrayLike,
    num_c: npt.ArrayLike,
    den_c: npt.ArrayLike,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """z-test on the difference of two ratio metrics (CTR = clicks / impressions) with users as the unit.

    A user's impressions are not independent (the same taste, the same fatigue), so a binomial
    test over impressions understates the variance; the delta method on per-user sums does not.

    Args:
        num_t: ``N_t`` per-user numerators of the treatment arm (clicks).
        den_t: ``N_t`` per-user denominators (impressions).
        num_c: ``N_c`` per-user numerators of the control arm.
        den_c: ``N_c`` per-user denominators.
        alpha: two-sided level.
    """
    return ratio_batch(
        _as_1d(num_t, "num_t")[None, :],
        _as_1d(den_t, "den_t")[None, :],
        _as_1d(num_c, "num_c")[None, :],
        _as_1d(den_c, "den_c")[None, :],
        alpha,
    ).row(0)


def ratio_batch(
    num_t: npt.ArrayLike,
    den_t: npt.ArrayLike,
    num_c: npt.ArrayLike,
    den_c: npt.ArrayLike,
    alpha: float = DEFAULT_ALPHA,
) -> BatchComparison:
    """``B`` delta-method ratio tests at once (Deng et al. 2018).

    Per arm, ``R = mean(num) / mean(den)`` and
    ``Var(R) ≈ (s_nn / μ_d² − 2 μ_n s_nd / μ_d³ + μ_n² s_dd / μ_d⁴) / N``.

    Args:
        num_t, den_t: ``B X N_t`` per-user numerators and denominators of the treatment arm.
        num_c, den_c: ``B X N_c`` the same for the control arm.
        alpha: two-sided level.
    """
    _check_alpha(alpha)
    n_t_values, d_t_values, n_c_values, d_c_values = (
        _as_2d(values, name) for values, name in zip((num_t, den_t, num_c, den_c), _RATIO_NAMES, strict=True)
    )
    if n_t_values.shape != d_t_values.shape or n_c_values.shape != d_c_values.shape:
        raise ValueError("each arm needs as many denominators as numerators")
    _check_same_batch(n_t_values, n_c_values)
    ratio_t, var_t, errors_t = _delta_ratio(n_t_values, d_t_values)
    ratio_c, var_c, errors_c = _delta_ratio(n_c_values, d_c_values)
    errors = np.where(errors_t != "", errors_t, errors_c)
    errors[(errors == "") & _vanishing(var_t + var_c, ratio_t, ratio_c)] = NO_VARIANCE
    df = np.full(ratio_t.shape, math.inf)
    return _assemble(
        "ratio", alpha, n_t_values.shape[1], n_c_values.shape[1], ratio_t, ratio_c, var_t, var_c, df, errors
    )


def _delta_ratio(num: FloatArray, den: FloatArray) -> tuple[FloatArray, FloatArray, npt.NDArray[np.str_]]:
    """Per row: the ratio of means, the delta-method variance of that ratio, and a degeneracy reason."""
    rows, n = num.shape
    if n < MIN_UNITS:
        nan = np.full(rows, math.nan)
        return nan, nan, _errors(nan, NO_UNITS)
    mean_num, mean_den = num.mean(axis=1), den.mean(axis=1)
    errors = _errors(mean_num, "")
    errors[mean_den == 0] = ZERO_DENOMINATOR
    safe_den = np.where(mean_den == 0, 1.0, mean_den)
    centred_num = num - mean_num[:, None]
    centred_den = den - mean_den[:, None]
    s_nn = (centred_num**2).sum(axis=1) / (n - 1)
    s_dd = (centred_den**2).sum(axis=1) / (n - 1)
    s_nd = (centred_num * centred_den).sum(axis=1) / (n - 1)
    ratio = mean_num / safe_den
    variance = (s_nn - 2 * ratio * s_nd + ratio**2 * s_dd) / (safe_den**2 * n)
    variance = np.maximum(variance, 0.0)  # a quadratic form of a covariance matrix; rounding can dip below 0
    ratio[errors != ""] = math.nan
    variance[errors != ""] = math.nan
    return ratio, variance, errors


# --- CUPED -------------------------------------------------------------------------------------------------


def cuped(metric: npt.ArrayLike, covariate: npt.ArrayLike) -> tuple[FloatArray, float]:
    """Remove from a metric the part its pre-period covariate predicts: ``Y − θ (X − mean X)``, ``θ = cov/var``.

    Call it on both arms pooled: θ estimated from the pooled data does not depend on the
    assignment, so the adjustment keeps the difference of means unbiased. The mean is unchanged.

    Args:
        metric: ``N`` per-user metric values ``Y`` during the experiment.
        covariate: ``N`` per-user values ``X`` from before it (the same metric in the pre-period).

    Returns:
        ``N`` adjusted values and θ (0 when the covariate does not vary).
    """
    y = _as_1d(metric, "metric")
    x = _as_1d(covariate, "covariate")
    if x.shape != y.shape:
        raise ValueError(f"metric and covariate need one value per user, got {y.size} and {x.size}")
    if y.size < MIN_UNITS:
        return y.copy(), 0.0
    centred_x = x - x.mean()
    var_x = float((centred_x**2).sum())
    theta = float((centred_x * (y - y.mean())).sum() / var_x) if var_x > 0 else 0.0
    return y - theta * centred_x, theta


def cuped_welch(
    treatment: npt.ArrayLike,
    control: npt.ArrayLike,
    pre_treatment: npt.ArrayLike,
    pre_control: npt.ArrayLike,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Welch's test on CUPED-adjusted values, with θ pooled over both arms: the same effect, a narrower CI.

    Args:
        treatment, control: ``N_t`` and ``N_c`` per-user metric values during the experiment.
        pre_treatment, pre_control: the same users' covariates from the pre-period.
        alpha: two-sided level.

    Returns:
        A ``Comparison`` with ``theta`` and ``variance_reduction``, the share of the variance of the
        difference of means that the adjustment removed (0.3: a 30% smaller variance).
    """
    y_t, y_c = _as_1d(treatment, "treatment"), _as_1d(control, "control")
    x_t, x_c = _as_1d(pre_treatment, "pre_treatment"), _as_1d(pre_control, "pre_control")
    if x_t.shape != y_t.shape or x_c.shape != y_c.shape:
        raise ValueError("each arm needs one pre-period covariate per user")
    adjusted, theta = cuped(np.concatenate([y_t, y_c]), np.concatenate([x_t, x_c]))
    result = welch_batch(adjusted[None, : y_t.size], adjusted[None, y_t.size :], alpha).row(0)
    raw = welch_batch(y_t[None, :], y_c[None, :], alpha).row(0)
    reduction = 1 - (result.std_error / raw.std_error) ** 2 if raw.std_error > 0 else 0.0
    return replace(result, method="cuped", theta=theta, variance_reduction=float(reduction))


# --- always-valid sequential test --------------------------------------------------------------------------


@dataclass(frozen=True)
class SequentialLook:
    """The state of a sequential test at one look (1-based): always valid, whenever one stops.

    ``ci_low .. ci_high`` is the confidence sequence (the running intersection of the looks'
    intervals); ``p_value`` is the running minimum of the inverse mixture likelihood ratio.
    """

    look: int
    n_treatment: int
    n_control: int
    mean_treatment: float
    mean_control: float
    difference: float
    std_error: float
    p_value: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class SequentialResult:
    """An mSPRT over all the looks, and the first look at which it crossed (``stopped_at``, 1-based)."""

    alpha: float
    tau: float
    looks: tuple[SequentialLook, ...]
    stopped_at: int | None

    @property
    def stopped_early(self) -> bool:
        return self.stopped_at is not None and self.stopped_at < len(self.looks)

    @property
    def final(self) -> SequentialLook:
        """The look where the experiment ends: the first crossing, else the last look."""
        return self.looks[(self.stopped_at or len(self.looks)) - 1]

    def to_comparison(self) -> Comparison:
        """The final look as a ``Comparison``, so the decision rule can use always-valid results.

        The relative interval is the difference's interval over the control mean, which treats the
        control mean as known: close to the delta method for small lifts, and always valid with it.
        """
        look = self.final
        base = look.mean_control
        if base == 0 or not math.isfinite(base):
            relative, rel_low, rel_high = math.nan, math.nan, math.nan
        else:
            relative = look.difference / abs(base)  # over |control|, as in every other test
            rel_low, rel_high = look.ci_low / abs(base), look.ci_high / abs(base)
        degenerate = not math.isfinite(look.std_error) or look.std_error == 0
        return Comparison(
            method="msprt",
            alpha=self.alpha,
            n_treatment=look.n_treatment,
            n_control=look.n_control,
            mean_treatment=look.mean_treatment,
            mean_control=look.mean_control,
            difference=look.difference,
            std_error=look.std_error,
            df=math.inf,
            ci_low=look.ci_low,
            ci_high=look.ci_high,
            p_value=look.p_value,
            relative_lift=relative,
            relative_ci_low=rel_low,
            relative_ci_high=rel_high,
            error=NO_VARIANCE if degenerate else None,
        )


def msprt(
    treatment: Sequence[npt.ArrayLike],
    control: Sequence[npt.ArrayLike],
    alpha: float = DEFAULT_ALPHA,
    *,
    tau: float,
    cumulative: bool = False,
) -> SequentialResult:
    """Mixture SPRT on a difference of means (Johari et al. 2017): peek at every look, stop at the first crossing.

    A fixed-horizon test checked every day rejects far more often than α; the mSPRT's p-values and
    confidence sequences are valid at any (data-dependent) stopping time. With ``Δ`` the difference
    of means and ``V`` its variance (plugged in from the data) at a look, the likelihood ratio of a
    ``N(0, τ²)`` mixture of effects against "no effect" is
    ``Λ = sqrt(V / (V + τ²)) · exp(τ² Δ² / (2 V (V + τ²)))``; ``p = min over looks of 1/Λ``, and
    the look's interval is ``Δ ± sqrt(2 V (V + τ²) / τ² · (log(1/α) + ½ log((V + τ²) / V)))``.

    Args:
        treatment: per look, an array of the treatment values that arrived in it (a new cohort, a
            day's observations), or, with ``cumulative``, all the treatment values as of that look.
        control: the same for the control arm; as many looks as ``treatment``.
        alpha: the level of the test and of the confidence sequence.
        tau: the standard deviation of the mixing distribution over effects, in the metric's units:
            about the size of effect one hopes to detect (the MDE). Validity holds for any τ; τ only
            shifts power between small and large effects.
        cumulative: each look's arrays are snapshots of all units so far (per-user metrics that
            keep accruing) rather than new arrivals. Validity then rests on the snapshots behaving
            like a growing i.i.d. sample, which holds approximately.
    """
    _check_alpha(alpha)
    if not tau > 0 or not math.isfinite(tau):
        raise ValueError(f"tau must be a positive number in the metric's units, got {tau}")
    if len(treatment) != len(control) or not treatment:
        raise ValueError(f"need the same number (>= 1) of looks per arm, got {len(treatment)} and {len(control)}")
    stats_t, stats_c = _look_stats(treatment, cumulative), _look_stats(control, cumulative)
    tau2 = tau**2
    p_value, ci_low, ci_high = 1.0, -math.inf, math.inf
    looks: list[SequentialLook] = []
    stopped_at: int | None = None
    for index, (arm_t, arm_c) in enumerate(zip(stats_t, stats_c, strict=True), start=1):
        difference = arm_t.mean - arm_c.mean
        variance = arm_t.variance / arm_t.n + arm_c.variance / arm_c.n if min(arm_t.n, arm_c.n) >= MIN_UNITS else 0.0
        scale = max(abs(arm_t.mean), abs(arm_c.mean), 1.0)
        if variance > (RELATIVE_TINY * scale) ** 2:
            log_lr = 0.5 * math.log(variance / (variance + tau2)) + tau2 * difference**2 / (
                2 * variance * (variance + tau2)
            )
            p_value = min(p_value, math.exp(-log_lr) if log_lr > 0 else 1.0)
            half_width = math.sqrt(
                2 * variance * (variance + tau2) / tau2 * (math.log(1 / alpha) + 0.5 * math.log1p(tau2 / variance))
            )
            ci_low, ci_high = max(ci_low, difference - half_width), min(ci_high, difference + half_width)
        if stopped_at is None and p_value <= alpha:
            stopped_at = index
        looks.append(
            SequentialLook(
                look=index,
                n_treatment=arm_t.n,
                n_control=arm_c.n,
                mean_treatment=arm_t.mean,
                mean_control=arm_c.mean,
                difference=difference,
                std_error=math.sqrt(variance),
                p_value=p_value,
                ci_low=ci_low,
                ci_high=ci_high,
            )
        )
    return SequentialResult(alpha=alpha, tau=tau, looks=tuple(looks), stopped_at=stopped_at)


def _look_stats(looks: Sequence[npt.ArrayLike], cumulative: bool) -> list[SampleStats]:
    per_look = [SampleStats.from_values(values) for values in looks]
    if cumulative:
        return per_look
    running, total = [], SampleStats(0, 0.0, 0.0)
    for look in per_look:
        total = total + look
        running.append(total)
    return running


# --- sample ratio mismatch ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SRMResult:
    """Whether the arms' sizes fit the planned split: a mismatch means the assignment or logging is broken."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    expected_shares: tuple[float, ...]
    statistic: float
    p_value: float
    alpha: float
    mismatch: bool


def srm_check(observed_counts: Sequence[int], expected_shares: Sequence[float], alpha: float = SRM_ALPHA) -> SRMResult:
    """Chi-square goodness of fit of the units per arm to the planned shares.

    A 52/48 split where 50/50 was planned is no small imbalance: it says some users were lost or
    moved in one arm (a crash, a redirect, a logging bug), and those users differ, so no metric of
    the experiment can be trusted. α is small because the check runs on every experiment.

    Args:
        observed_counts: units (users) per arm.
        expected_shares: the planned share of each arm, summing to 1.
        alpha: level of the check.
    """
    _check_alpha(alpha)
    observed = np.asarray(observed_counts, dtype=np.int64)
    shares = np.asarray(expected_shares, dtype=np.float64)
    if observed.ndim != 1 or observed.shape != shares.shape or observed.size < 2:
        raise ValueError("need one count and one expected share per arm, for at least two arms")
    if (observed < 0).any():
        raise ValueError(f"counts cannot be negative, got {observed.tolist()}")
    if not np.isfinite(shares).all() or (shares <= 0).any() or abs(shares.sum() - 1) > SHARE_TOLERANCE:
        raise ValueError(f"expected shares must be positive and sum to 1, got {shares.tolist()}")
    total = int(observed.sum())
    expected = shares * total
    if total == 0:
        statistic, p_value = 0.0, 1.0
    else:
        result = stats.chisquare(observed, expected)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    return SRMResult(
        observed=tuple(int(count) for count in observed),
        expected=tuple(float(count) for count in expected),
        expected_shares=tuple(float(share) for share in shares),
        statistic=statistic,
        p_value=p_value,
        alpha=alpha,
        mismatch=p_value < alpha,
    )


# --- multiple comparisons ----------------------------------------------------------------------------------


def holm_adjusted(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values: the family-wise error stays ≤ α across several primary metrics.

    Sorted ascending, the i-th of m p-values (0-based) becomes ``max over j <= i of (m − j) p_(j)``,
    capped at 1. Uniformly more powerful than Bonferroni, under any dependence.
    """
    for name, p in p_values.items():
        if not 0 <= p <= 1:
            raise ValueError(f"p-value of {name!r} must lie in [0, 1], got {p}")
    ordered = sorted(p_values, key=lambda name: p_values[name])
    count = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for rank, name in enumerate(ordered):
        running = max(running, min(1.0, (count - rank) * p_values[name]))
        adjusted[name] = running
    return {name: adjusted[name] for name in p_values}


def holm(p_values: Mapping[str, float], alpha: float = DEFAULT_ALPHA) -> dict[str, bool]:
    """Which hypotheses Holm's procedure rejects at family-wise level ``alpha``."""
    _check_alpha(alpha)
    return {name: p <= alpha for name, p in holm_adjusted(p_values).items()}


# --- planning ----------------------------------------------------------------------------------------------


def power_analysis(
    baseline_mean: float,
    baseline_std: float,
    mde: float,
    alpha: float = DEFAULT_ALPHA,
    power: float = DEFAULT_POWER,
) -> int:
    """Users per arm for a two-sided test to detect a relative lift ``mde`` with probability ``power``.

    Normal approximation with equal arms: ``n = 2 (z_{1−α/2} + z_power)² σ² / (mde · μ)²``.

    Args:
        baseline_mean: the control mean μ of the metric.
        baseline_std: the per-user standard deviation σ of the metric.
        mde: the minimum detectable effect, relative to ``baseline_mean`` (0.02 = 2%).
    """
    _check_alpha(alpha)
    _check_power(power)
    if baseline_mean == 0 or not math.isfinite(baseline_mean):
        raise ValueError(f"a relative MDE needs a finite, non-zero baseline mean, got {baseline_mean}")
    if not baseline_std > 0 or not mde > 0:
        raise ValueError(f"baseline_std and mde must be positive, got {baseline_std} and {mde}")
    effect = mde * abs(baseline_mean)
    return math.ceil(2 * (_z_sum(alpha, power) * baseline_std / effect) ** 2)


def mde_for(n: int, std: float, alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER) -> float:
    """The smallest absolute difference of means ``n`` users per arm detect with probability ``power``.

    The inverse of ``power_analysis`` (in the metric's units; divide by the baseline mean for a lift).
    """
    _check_alpha(alpha)
    _check_power(power)
    if n < 1 or not std > 0:
        raise ValueError(f"need n >= 1 and a positive std, got {n} and {std}")
    return _z_sum(alpha, power) * std * math.sqrt(2 / n)


def _z_sum(alpha: float, power: float) -> float:
    return float(special.ndtri(1 - alpha / 2) + special.ndtri(power))


# --- shared helpers ----------------------------------------------------------------------------------------


def _assemble(
    method: Method,
    alpha: float,
    n_t: int,
    n_c: int,
    mean_t: FloatArray,
    mean_c: FloatArray,
    var_mean_t: FloatArray,
    var_mean_c: FloatArray,
    df: FloatArray,
    errors: npt.NDArray[np.str_],
    p_value: FloatArray | None = None,
    ci_low: FloatArray | None = None,
    ci_high: FloatArray | None = None,
) -> BatchComparison:
    """The common tail of every test: difference, (z or t) p-value and CI unless given, delta-method lift."""
    ok = errors == ""
    difference = mean_t - mean_c
    std_error = np.sqrt(var_mean_t + var_mean_c)
    with np.errstate(divide="ignore", invalid="ignore"):
        quantile = special.stdtrit(df, 1 - alpha / 2)
        if p_value is None:
            p_value = 2 * special.stdtr(df, -np.abs(difference / std_error))
        if ci_low is None or ci_high is None:
            ci_low, ci_high = difference - quantile * std_error, difference + quantile * std_error
        safe_base = np.where(mean_c == 0, math.nan, mean_c)
        relative = difference / np.abs(safe_base)  # over |control|: a better treatment is a positive lift
        relative_se = np.sqrt(var_mean_t / safe_base**2 + mean_t**2 * var_mean_c / safe_base**4)
        relative_low, relative_high = relative - quantile * relative_se, relative + quantile * relative_se
    p_value = np.where(ok, p_value, 1.0)
    ci_low, ci_high = np.where(ok, ci_low, -math.inf), np.where(ok, ci_high, math.inf)
    relative_low = np.where(ok, relative_low, np.where(np.isnan(relative), math.nan, -math.inf))
    relative_high = np.where(ok, relative_high, np.where(np.isnan(relative), math.nan, math.inf))
    return BatchComparison(
        method=method,
        alpha=alpha,
        n_treatment=n_t,
        n_control=n_c,
        mean_treatment=mean_t,
        mean_control=mean_c,
        difference=difference,
        std_error=std_error,
        df=df,
        ci_low=ci_low,
        ci_high=ci_high,
        p_value=p_value,
        relative_lift=relative,
        relative_ci_low=relative_low,
        relative_ci_high=relative_high,
        error=errors,
    )


def _errors(like: FloatArray, reason: str) -> npt.NDArray[np.str_]:
    width = max(len(NO_UNITS), len(NO_VARIANCE), len(ZERO_DENOMINATOR))
    return np.full(like.shape, reason, dtype=f"<U{width}")


def _vanishing(variance: FloatArray, mean_t: FloatArray, mean_c: FloatArray) -> npt.NDArray[np.bool_]:
    """Variances of the difference indistinguishable from 0 at the scale of the means (constant data)."""
    scale = np.maximum(np.maximum(np.abs(mean_t), np.abs(mean_c)), 1.0)
    return ~(variance > (RELATIVE_TINY * scale) ** 2)


def _as_1d(values: npt.ArrayLike, name: str, *, allow_empty: bool = False) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of per-user values, got shape {array.shape}")
    if not allow_empty and array.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _as_2d(values: npt.ArrayLike, name: str) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"{name} must be a B X N array (one row per test), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _check_same_batch(treatment: FloatArray, control: FloatArray) -> None:
    if treatment.shape[0] != control.shape[0]:
        raise ValueError(
            f"treatment and control need as many rows (tests), got {treatment.shape[0]} and {control.shape[0]}"
        )


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _check_power(power: float) -> None:
    if not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power}")
