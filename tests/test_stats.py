"""Replicate statistics against references that do not come from SciPy: printed t tables, R's
`t.test` and `p.adjust`, and Cohen's power table."""

from __future__ import annotations

import math

import pytest

from pipeline import stats
from pipeline.stats import (
    curve_summary,
    detectable_difference,
    holm,
    power,
    seeds_needed,
    summary,
    t_quantile,
    welch,
)


# Two-sided 95% critical values of Student's t, as printed in the usual tables.
@pytest.mark.parametrize(
    ("df", "expected"),
    [(1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (30, 2.042), (60, 2.000), (120, 1.980)],
)
def test_t_quantile_matches_the_printed_tables(df: int, expected: float) -> None:
    assert t_quantile(df) == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(("df", "level"), [(0, 0.95), (5, 1.5)])
def test_t_quantile_refuses_what_it_cannot_answer(df: int, level: float) -> None:
    with pytest.raises(ValueError, match=f"{df if df < 1 else level}"):
        t_quantile(df, level)


def test_summary_of_three_values() -> None:
    s = summary([0.97, 0.98, 0.99])
    half = 4.303 * 0.01 / math.sqrt(3)  # the table's t for 2 degrees of freedom
    assert s.n == 3
    assert s.mean == pytest.approx(0.98) and s.std == pytest.approx(0.01)
    assert s.ci_low == pytest.approx(0.98 - half, abs=1e-5)
    assert s.ci_high == pytest.approx(0.98 + half, abs=1e-5)


def test_a_single_value_has_no_spread_or_interval() -> None:
    s = summary([0.5])
    assert (s.n, s.mean) == (1, 0.5)
    assert math.isnan(s.std) and math.isnan(s.ci_low) and math.isnan(s.ci_high)
    with pytest.raises(ValueError):
        summary([])


# R's `sleep` data (Cushny and Peebles' extra hours of sleep with two drugs), and what
# `t.test(extra ~ group, data = sleep)` prints: "t = -1.8608, df = 17.776, p-value = 0.07939",
# "95 percent confidence interval: -3.3654832  0.2054832".
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]


def test_welch_matches_r_t_test_on_the_sleep_data() -> None:
    test = welch(SLEEP_1, SLEEP_2)
    assert test.diff == pytest.approx(0.75 - 2.33)
    assert test.t == pytest.approx(-1.8608, abs=1e-4)
    assert test.df == pytest.approx(17.776, abs=1e-3)
    assert test.p == pytest.approx(0.07939, abs=1e-5)
    assert test.ci_low == pytest.approx(-3.3654832, abs=1e-7)
    assert test.ci_high == pytest.approx(0.2054832, abs=1e-7)
    # The other way round: the same test, mirrored.
    mirrored = welch(SLEEP_2, SLEEP_1)
    assert (mirrored.t, mirrored.p) == (pytest.approx(1.8608, abs=1e-4), pytest.approx(test.p))


def test_welch_without_spread_and_with_too_few_values() -> None:
    assert welch([0.9, 0.9], [0.8, 0.8]).p == 0.0
    assert welch([0.9, 0.9], [0.9, 0.9]).p == 1.0
    with pytest.raises(ValueError, match="2 values a side, not 1 and 3"):
        welch([0.9], [0.8, 0.8, 0.7])


def test_holm_matches_r_p_adjust() -> None:
    # p.adjust(c(0.01, 0.04, 0.03, 0.005), "holm")
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # p.adjust(c(0.02, 0.5, 0.001), "holm"): capped at 1 and never below an earlier step.
    assert holm([0.02, 0.5, 0.001]) == pytest.approx([0.04, 0.5, 0.003])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


# Cohen (1988), Table 2.4.1: n per group for 80% power, two-sided test at 5%. The noncentral
# t may differ from his normal approximation by one.
@pytest.mark.parametrize(("effect", "n"), [(0.5, 64), (0.8, 26), (1.0, 17), (0.2, 393)])
def test_seeds_needed_matches_cohens_power_table(effect: float, n: int) -> None:
    assert abs(seeds_needed(effect, 1.0) - n) <= 1
    # The same in accuracy units: a difference of 0.1% at a std of 0.2% is d = 0.5.
    assert abs(seeds_needed(effect * 0.002, 0.002) - n) <= 1


def test_power_grows_with_the_seeds_and_crosses_80_percent_where_planned() -> None:
    n = seeds_needed(0.5, 1.0)
    assert power(0.5, n) >= 0.8 > power(0.5, n - 1)
    assert power(0.5, 10) < power(0.5, 20) < power(0.5, 100) < 1


def test_seeds_needed_edges() -> None:
    assert seeds_needed(0.0, 0.001) == math.inf  # no difference: no number of seeds shows it
    assert seeds_needed(1e-6, 0.01) == math.inf  # beyond MAX_SEEDS
    assert seeds_needed(0.01, 0.0) == 2
    assert seeds_needed(-0.5, 1.0) == seeds_needed(0.5, 1.0)


def test_detectable_difference_is_seeds_needed_inverted() -> None:
    # The example: 5 seeds at a std of 0.0015 resolve about 0.30%.
    assert detectable_difference(5, 0.0015) == pytest.approx(0.0030, abs=1e-4)
    # Cohen: 64 a side detect d = 0.5, 17 detect d = 1 (to within the table's rounding).
    assert detectable_difference(64, 1.0) == pytest.approx(0.5, abs=0.01)
    assert detectable_difference(17, 1.0) == pytest.approx(0.98, abs=0.02)
    assert math.isnan(detectable_difference(1, 1.0))


def test_pooled_std() -> None:
    # Variances 1 (n = 3) and 4 (n = 5): (2 * 1 + 4 * 4) / 6 = 3.
    a, b = [1.0, 2.0, 3.0], [0.0, 0.0, 4.0, 4.0, 2.0]
    assert stats.pooled_std(a, b) == pytest.approx(math.sqrt(3))


def test_curve_summary_uses_the_epochs_all_runs_have() -> None:
    mean, std = curve_summary([[0.1, 0.2, 0.3], [0.3, 0.4]])
    assert mean.tolist() == pytest.approx([0.2, 0.3])
    assert std.tolist() == pytest.approx([math.sqrt(0.02)] * 2)
    mean, std = curve_summary([[0.1, 0.2]])
    assert mean.tolist() == [0.1, 0.2] and all(math.isnan(s) for s in std)
