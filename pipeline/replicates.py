"""Runs that differ only in their seed are replicates of one configuration: grouped, summarised
and each configuration tested against the best (pipeline.stats does the statistics).

Configurations are ranked on mean validation accuracy when every run has one (`val_split >
0`), else on mean test accuracy, which makes the best's test score optimistic. Each is tested
against the best with Welch's t-test, Holm-adjusted over the report's comparisons.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

import pandas as pd

from pipeline import stats
from pipeline.errors import PipelineError

# The columns a configuration takes from its runs (equal in all of them).
SETUP = ("data", "model", "activation", "optimizer", "epochs", "batch_size")
# What a row of `group_rows` holds, as table.csv writes it.
GROUP_COLUMNS = (
    "config",
    *SETUP,
    "n",
    "seeds",
    "train_accuracy_mean",
    "train_accuracy_std",
    "val_accuracy_mean",
    "val_accuracy_std",
    "test_accuracy_mean",
    "test_accuracy_std",
    "test_accuracy_ci_low",
    "test_accuracy_ci_high",
    "gap_mean",
    "gap_std",
    "ranked_on",
    "diff_vs_best",
    "diff_ci_low",
    "diff_ci_high",
    "p_value",
    "p_holm",
    "vs_best",
    "seeds_needed",
)
# Summarised over each configuration's runs.
METRICS = ("train_accuracy", "val_accuracy", "test_accuracy", "gap")
# Train accuracy on the true labels, of runs with label noise (summarised where all have it).
CLEAN = "train_clean_accuracy"
VALIDATION, TEST = "val_accuracy", "test_accuracy"
NAMES = {VALIDATION: "validation accuracy", TEST: "test accuracy"}


class NoRunsError(PipelineError):
    """Nothing matched: no experiment, no runs, or a filter that selects none."""


def plus_minus(mean: float, std: float, digits: int = 4, signed: bool = False) -> str:
    """`mean ± std` as the reports print it: `-` for the std of a single run, `-` alone
    when there is no value at all."""
    if math.isnan(mean):
        return "-"
    sign = "+" if signed else ""
    spread = "-" if math.isnan(std) else f"{std:.{digits}f}"
    return f"{mean:{sign}.{digits}f} ± {spread}"


def ranking_metric(rows: list[Mapping[str, Any]]) -> str:
    """`val_accuracy` when every row (or run's metrics) has one, else `test_accuracy`."""
    return VALIDATION if all(not math.isnan(r.get(VALIDATION, math.nan)) for r in rows) else TEST


def number(text: str) -> float | None:
    """`text` as a number (`0.1`, `3000`, or a one-element list such as `[64]`), else None."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        value = float(inner)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def _summarised(runs: pd.DataFrame, label: str, metric: str) -> dict[str, Any]:
    """One configuration's row: its setup, n and seeds, mean and std of each metric, the 95%
    interval of the mean test accuracy, and the values of the ranking `metric`."""
    first = runs.iloc[0]
    group: dict[str, Any] = {c: first[c] for c in SETUP}
    group["config"], group["n"] = label or first["run"], len(runs)
    seeds = sorted(runs["seed"], key=lambda s: (number(s) is None, number(s) or 0, s))
    group["seeds"] = ",".join(seeds)
    names = [*METRICS, *([CLEAN] if CLEAN in runs and runs[CLEAN].notna().all() else [])]
    for name in names:
        values = runs[name].tolist() if name in runs else [math.nan] * len(runs)
        summary = stats.summary(values)
        group[f"{name}_mean"], group[f"{name}_std"] = summary.mean, summary.std
        if name == TEST:
            group["test_accuracy_ci_low"] = summary.ci_low
            group["test_accuracy_ci_high"] = summary.ci_high
    group["ranked_on"], group["samples"] = metric, runs[metric].tolist()
    group["params"], group["run_ids"] = dict(first["key"]), runs["run_id"].tolist()
    return group


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration (runs whose params are equal but for `seed`), the best first,
    with the columns of GROUP_COLUMNS.

    `ranked_on` is the metric of `ranking_metric`. `config` names the params that differ
    between the configurations (the run name when none does). Each configuration with n >= 2
    is tested against the best (`_against_best`): `vs_best` is "best", "worse" (Holm-adjusted
    Welch p below 5%), "tie", or "n<2" (it or the best has a single run: nothing to test).
    """
    metric = ranking_metric(rows)
    frame = pd.DataFrame(rows)
    frame["key"] = [
        tuple(sorted((k, v) for k, v in r["params"].items() if k != "seed")) for r in rows
    ]
    configs = [dict(key) for key in frame["key"].unique()]
    keys = {k for config in configs for k in config}
    varying = sorted(k for k in keys if len({c.get(k) for c in configs}) > 1)
    groups = []
    for key, runs in frame.groupby("key", sort=False):
        # A key only some configurations have (elu's `activation_args.alpha`) names theirs.
        label = " ".join(f"{k}={v}" for k, v in sorted(dict(key).items()) if k in varying)
        groups.append(_summarised(runs, label, metric))
    groups.sort(key=lambda g: -g[f"{metric}_mean"])
    _against_best(groups, metric)
    return groups


def _against_best(groups: list[dict[str, Any]], metric: str) -> None:
    """Set each group's test against the best (`groups[0]`) on `metric`: the difference and
    its 95% Welch interval, Welch's p, Holm's p over all the comparisons, the verdict, and for
    a tie the seeds per configuration that would show its difference."""
    best = groups[0]
    for group in groups:
        untested = dict.fromkeys(("diff_ci_low", "diff_ci_high", "p_value", "p_holm"), math.nan)
        group.update(untested, seeds_needed=math.nan, vs_best="n<2")
        group["diff_vs_best"] = best[f"{metric}_mean"] - group[f"{metric}_mean"]
    best["vs_best"] = "best"
    tested = [g for g in groups[1:] if g["n"] >= 2 and best["n"] >= 2]
    for group in tested:
        test = stats.welch(best["samples"], group["samples"])
        group.update(diff_ci_low=test.ci_low, diff_ci_high=test.ci_high, p_value=test.p)
    adjusted = stats.holm([g["p_value"] for g in tested])
    for group, p in zip(tested, adjusted, strict=True):
        group["p_holm"] = p
        group["vs_best"] = "worse" if p < stats.ALPHA else "tie"
        if group["vs_best"] == "tie":
            std = stats.pooled_std(best["samples"], group["samples"])
            group["seeds_needed"] = stats.seeds_needed(group["diff_vs_best"], std)


def rule(groups: list[dict[str, Any]]) -> str:
    """The report's header: what ranks the configurations, the test that marks them, and the
    resolution (the smallest difference its number of seeds detects with 80% power)."""
    metric = groups[0]["ranked_on"]
    ranked = "Configurations ranked on validation"
    if metric == TEST:
        ranked = "Configurations ranked on the test set: the best's test score is optimistic"
    compared = sum(not math.isnan(g["p_holm"]) for g in groups)
    text = (
        f"{ranked}. Each configuration against the best: Welch's t-test of the difference "
        f"of mean {NAMES[metric]}, Holm-adjusted over {compared} comparisons; "
        f"worse when p_holm < {stats.ALPHA:g}, else tie."
    )
    spread = [g for g in groups if g["n"] >= 2]
    if not spread:
        return f"{text} With one run per configuration nothing can be tested: run more seeds."
    n = int(statistics.median(g["n"] for g in spread))
    std = statistics.median(g[f"{metric}_std"] for g in spread)
    resolution = stats.detectable_difference(n, std)
    return (
        f"{text} With {n} seeds per configuration, differences below {resolution:.2%} are "
        f"not detectable (80% power at the median std {std:.4f}): a tie is not an equality."
    )


def plan_seeds(groups: list[dict[str, Any]], difference: float) -> list[str]:
    """Per configuration with n >= 2: the seeds per configuration at which a two-sided 5%
    t-test would detect `difference` with 80% power, given its measured std.

    Raises:
        NoRunsError: no configuration has the 2 runs a std needs.
    """
    lines = []
    for group in groups:
        if group["n"] < 2:
            continue
        metric = group["ranked_on"]
        std = group[f"{metric}_std"]
        seeds = stats.seeds_needed(difference, std)
        needed = f"more than {stats.MAX_SEEDS:,}" if math.isinf(seeds) else f"{seeds}"
        lines.append(
            f"{group['config']}: {needed} seeds per configuration to detect {difference:.2%} "
            f"with 80% power ({metric} std {std:.4f} over {group['n']} runs)"
        )
    if not lines:
        raise NoRunsError(
            "no configuration has 2 runs or more to measure a std from: run several seeds "
            "(seed=0,1,2)"
        )
    return lines
