"""Replicate statistics: Student t critical values without scipy, summaries and intervals."""

from __future__ import annotations

import math

import pytest

from pipeline.stats import Summary, curve_summary, overlaps, summary, t_quantile


@pytest.mark.parametrize(
    ("df", "expected", "tolerance"),
    [(1, 12.706, 0), (2, 4.303, 0), (4, 2.776, 0), (10, 2.228, 0), (30, 2.042, 0),
     # Beyond the table, the expansion: scipy.stats.t.ppf(0.975, df) to 4 decimals.
     (31, 2.0395, 1e-4), (60, 2.0003, 1e-4), (120, 1.9799, 1e-4), (1000, 1.9623, 1e-4)],
)  # fmt: skip
def test_t_quantile_matches_the_tables(df: int, expected: float, tolerance: float) -> None:
    assert t_quantile(df) == pytest.approx(expected, abs=tolerance)


@pytest.mark.parametrize(("df", "level"), [(0, 0.95), (5, 0.99)])
def test_t_quantile_refuses_what_it_cannot_answer(df: int, level: float) -> None:
    with pytest.raises(ValueError, match=f"{df if df < 1 else level}"):
        t_quantile(df, level)


def test_summary_of_three_values() -> None:
    s = summary([0.97, 0.98, 0.99])
    half = 4.303 * 0.01 / math.sqrt(3)
    assert s.n == 3
    assert s.mean == pytest.approx(0.98) and s.std == pytest.approx(0.01)
    assert (s.ci_low, s.ci_high) == (pytest.approx(0.98 - half), pytest.approx(0.98 + half))


def test_a_single_value_has_no_spread_or_interval() -> None:
    s = summary([0.5])
    assert (s.n, s.mean) == (1, 0.5)
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    with pytest.raises(ValueError):
        summary([])


def test_overlaps() -> None:
    a = Summary(3, 0.98, 0.01, 0.955, 1.005)
    assert overlaps(a, Summary(3, 0.97, 0.01, 0.945, 0.995)) is True
    assert overlaps(a, Summary(3, 0.90, 0.005, 0.888, 0.912)) is False
    assert overlaps(a, summary([0.99])) is None
    assert overlaps(summary([0.99]), a) is None


def test_curve_summary_uses_the_epochs_all_runs_have() -> None:
    mean, std = curve_summary([[0.1, 0.2, 0.3], [0.3, 0.4]])
    assert mean.tolist() == pytest.approx([0.2, 0.3])
    assert std.tolist() == pytest.approx([math.sqrt(0.02)] * 2)
    mean, std = curve_summary([[0.1, 0.2]])
    assert mean.tolist() == [0.1, 0.2] and all(math.isnan(s) for s in std)
