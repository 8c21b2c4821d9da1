"""Replicates (runs that differ only in their seed) summarised: mean, sample standard deviation
and a 95% Student t confidence interval of the mean. Pure Python and NumPy: no scipy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Two-sided 95% critical values of Student's t (its 0.975 quantile) for 1 to 30 degrees of
# freedom, as printed in the usual tables.
_T95 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip
_Z975 = 1.959964  # the normal distribution's 0.975 quantile


def t_quantile(df: int, level: float = 0.95) -> float:
    """The two-sided critical value of Student's t with `df` degrees of freedom: the interval
    mean ± t * std / sqrt(n) covers the true mean with probability `level`.

    Raises:
        ValueError: `df` below 1, or a level other than 0.95 (the only one tabulated).
    """
    if level != 0.95:
        raise ValueError(f"confidence level {level}: only 0.95 is supported")
    if df < 1:
        raise ValueError(f"degrees of freedom {df}: must be at least 1")
    if df <= len(_T95):
        return _T95[df - 1]
    # Beyond the table, the Cornish-Fisher expansion around the normal quantile
    # (Abramowitz & Stegun 26.7.5): already within 1e-4 of the exact value at df = 31.
    z = _Z975
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    g4 = (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / 92160
    return z + g1 / df + g2 / df**2 + g3 / df**3 + g4 / df**4


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
    if not values:
        raise ValueError("no values to summarise")
    data = np.asarray(values, dtype=float)
    n, mean = len(data), float(data.mean())
    if n == 1:
        return Summary(1, mean, math.nan, math.nan, math.nan)
    std = float(data.std(ddof=1))
    half = t_quantile(n - 1) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def overlaps(a: Summary, b: Summary) -> bool | None:
    """Whether the 95% intervals of `a` and `b` overlap (the two means are then not told
    apart); None when either has fewer than 2 values, which leaves no interval to compare."""
    if a.n < 2 or b.n < 2:
        return None
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high


def curve_summary(curves: Sequence[Sequence[float]]) -> tuple[np.ndarray, np.ndarray]:
    """Per-epoch mean and sample std of several runs' curves, over the epochs all of them
    have (runs may have stopped early); the std is nan with a single curve."""
    length = min(len(c) for c in curves)
    data = np.array([c[:length] for c in curves], dtype=float).reshape(len(curves), length)
    std = data.std(axis=0, ddof=1) if len(curves) > 1 else np.full(length, math.nan)
    return data.mean(axis=0), std
