"""Replicates (runs that differ only in their seed) compared: a thin layer over `scipy.stats`.

- `summary`: mean, sample std and the 95% Student t interval of the mean.
- `welch`: Welch's two-sided t-test of a difference of means, with its 95% interval.
- `holm`: Holm's step-down adjustment of p values for many comparisons.
- `seeds_needed` and `detectable_difference`: the power of a two-sided two-sample t-test at 5%,
  from the noncentral t distribution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as sp

LEVEL = 0.95  # of every interval
ALPHA = 0.05  # of every test
POWER = 0.80  # that a planned number of seeds should give
# Beyond this many seeds per configuration, `seeds_needed` says "more than this".
MAX_SEEDS = 100_000


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided critical value of Student's t: mean ± t * std / sqrt(n) covers the true
    mean with probability `level`.

    Raises:
        ValueError: `df` not positive, or `level` outside (0, 1).
    """
    if not df > 0:
        raise ValueError(f"degrees of freedom {df}: must be positive")
    if not 0 < level < 1:
        raise ValueError(f"confidence level {level}: must be between 0 and 1")
    return float(sp.t.ppf((1 + level) / 2, df))


@dataclass(frozen=True)
class Summary:
    """n values' mean, sample standard deviation and 95% interval of the mean (std and
    interval are nan for a single value: one run says nothing of the spread)."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def summary(values: Sequence[float]) -> Summary:
    """Mean, sample std (ddof=1) and the 95% t interval of the mean of `values`.

    Raises:
        ValueError: no values.
    """
    if not len(values):
        raise ValueError("no values to summarise")
    data = np.asarray(values, dtype=float)
    n, mean = len(data), float(data.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(data.std(ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


@dataclass(frozen=True)
class Welch:
    """Welch's test of mean(a) - mean(b): the difference, its 95% interval, t, the
    Welch-Satterthwaite degrees of freedom and the two-sided p value."""

    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p: float


def welch(a: Sequence[float], b: Sequence[float]) -> Welch:
    """Welch's unequal-variance t-test of two samples of at least 2 values each.

    Two samples without any spread are told apart exactly: p is 0 when their means differ,
    1 when they are equal (scipy would answer nan).

    Raises:
        ValueError: a sample of fewer than 2 values.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if min(len(a), len(b)) < 2:
        raise ValueError(f"Welch's test needs 2 values a side, not {len(a)} and {len(b)}")
    diff = float(a.mean() - b.mean())
    if a.std() == 0 and b.std() == 0:
        return Welch(diff, diff, diff, math.copysign(math.inf, diff), math.nan, float(diff == 0))
    result = sp.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(LEVEL)
    low, high = float(interval.low), float(interval.high)
    return Welch(diff, low, high, float(result.statistic), float(result.df), float(result.pvalue))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment, in the order given: the i-th smallest p is multiplied by
    (m - i + 1), kept at least as large as the one before it, and capped at 1. It controls
    the chance of any false "worse" among the m comparisons at the level, whatever their
    dependence (the comparisons with one best share that best's runs)."""
    m = len(p_values)
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def power(effect: float, n: int, alpha: float = ALPHA) -> float:
    """The power of a two-sided two-sample t-test at level `alpha` with `n` values a side, to
    detect a true difference of `effect` standard deviations (Cohen's d)."""
    if n < 2:
        return math.nan
    df = 2 * n - 2
    critical = sp.t.ppf(1 - alpha / 2, df)
    shift = abs(effect) * math.sqrt(n / 2)  # the noncentrality of the t statistic
    # The far tail (a significant difference of the wrong sign) is negligible once the shift
    # is large, where scipy may answer nan for it.
    wrong_sign = float(sp.nct.cdf(-critical, df, shift))
    return float(sp.nct.sf(critical, df, shift)) + (0.0 if math.isnan(wrong_sign) else wrong_sign)


def seeds_needed(diff: float, std: float, target: float = POWER) -> float:
    """The fewest values per configuration (seeds) at which a two-sided 5% t-test detects a
    true difference `diff` with power `target`, given the runs' common std; inf for no
    difference, or beyond MAX_SEEDS."""
    if diff == 0 or math.isnan(diff) or math.isnan(std):
        return math.inf
    if std == 0:
        return 2
    effect = abs(diff) / std
    if power(effect, MAX_SEEDS) < target:
        return math.inf
    low, high = 2, MAX_SEEDS  # power grows with n: bisect for the first n that reaches it
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if power(effect, middle) >= target else (middle + 1, high)
    return low


def detectable_difference(n: int, std: float, target: float = POWER) -> float:
    """The smallest true difference a two-sided 5% t-test with `n` values a side detects with
    power `target`, given the runs' common std (nan with fewer than 2)."""
    if n < 2 or math.isnan(std):
        return math.nan
    effect = optimize.brentq(lambda d: power(d, n) - target, 1e-9, 100.0)
    return effect * std


def pooled_std(a: Sequence[float], b: Sequence[float]) -> float:
    """The two samples' pooled standard deviation (the one a t-test of equal variances
    uses): the square root of their variances averaged, each weighted by its n - 1."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    squares = (len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)
    return math.sqrt(squares / (len(a) + len(b) - 2))


def curve_summary(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch mean and sample std of several runs' curves, over the epochs all of them
    have (runs may have stopped early); the std is nan with a single curve."""
    length = min(len(c) for c in curves)
    data = np.array([c[:length] for c in curves], dtype=float).reshape(len(curves), length)
    std = data.std(axis=0, ddof=1) if len(curves) > 1 else np.full(length, math.nan)
    return data.mean(axis=0), std
