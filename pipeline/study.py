"""A study's plot: how train and test accuracy and their gap move with the one key a sweep
varies, mean ± std over seeds (or per epoch, for the best configuration's runs).

A sweep of a study preset (`+experiment=epochs|width|data_size|label_noise`) gets it on its
parent run; benchmarks/studies.py writes docs/overfitting/ from it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import plots, stats
from pipeline.io import write_text
from pipeline.replicates import CLEAN, METRICS, NoRunsError, number
from pipeline.tracking.search import metric_history

# What `study_report` draws per epoch, from the runs' `epoch/<name>` histories.
EPOCH_METRICS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss")


def _epoch_rows(uri: str, group: dict[str, Any]) -> list[dict[str, Any]]:
    """Per epoch, mean and std over the group's runs of the epoch metrics and the gap."""
    runs = []
    for run_id in group["run_ids"]:
        curves = {k: metric_history(uri, run_id, f"epoch/{k}") for k in EPOCH_METRICS}
        if all(curves.values()):
            runs.append(curves)
    if not runs:
        raise NoRunsError(f"no per-epoch histories in the runs of {group['config']}")
    # Runs that stopped early: the epochs all of them have.
    epochs = min(len(h) for r in runs for h in r.values())
    rows = []
    for e in range(epochs):
        row: dict[str, Any] = {"x": e + 1, "n": len(runs)}
        values = {k: [r[k][e] for r in runs] for k in EPOCH_METRICS}
        values["gap"] = [r["train_accuracy"][e] - r["test_accuracy"][e] for r in runs]
        for metric, data in values.items():
            summary = stats.summary(data)
            row[f"{metric}_mean"], row[f"{metric}_std"] = summary.mean, summary.std
        rows.append(row)
    return rows


def _param_rows(groups: list[dict[str, Any]], x_key: str) -> list[dict[str, Any]]:
    """A row per configuration, x its value of the param `x_key`, in order of x."""
    if not any(x_key in g["params"] for g in groups):
        valid = sorted({k for g in groups for k in g["params"]})
        raise ValueError(
            f"x {x_key!r} is not a param of the runs; valid: epoch, {', '.join(valid)}"
        )
    texts = [g["params"].get(x_key, "?") for g in groups]
    numbers = [number(t) for t in texts]
    # Numbers on a numeric axis; anything else (activations, `None`) as sorted categories.
    xs = numbers if None not in numbers else texts
    # A label noise study: its train accuracy on the true labels too.
    noisy = any(float(g["params"].get("data.label_noise", 0)) > 0 for g in groups)
    clean = noisy and all(f"{CLEAN}_mean" in g for g in groups)
    # Validation accuracy where every configuration has it.
    metrics = [m for m in METRICS if not any(math.isnan(g[f"{m}_mean"]) for g in groups)]
    metrics += [CLEAN] if clean else []
    columns = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    rows = [
        {"x": x, "n": g["n"], **{c: g[c] for c in columns}} for x, g in zip(xs, groups, strict=True)
    ]
    return sorted(rows, key=lambda r: r["x"])


def study_report(
    uri: str, groups: list[dict[str, Any]], x_key: str, out: Path, title: str
) -> list[Path]:
    """Write study.png and study.csv under `out`: train and test accuracy and their gap, mean
    ± std over seeds, against the swept param `x_key` (one point per configuration), or
    against the epoch (`x_key` "epoch": the first, best, configuration's runs, their train and
    test loss too, read from the store at `uri`); return them.

    Raises:
        ValueError: `x_key` is neither "epoch" nor a param of the runs.
        NoRunsError: "epoch", and the runs logged no per-epoch metrics.
    """
    rows = _epoch_rows(uri, groups[0]) if x_key == "epoch" else _param_rows(groups, x_key)
    columns = ("x", "n", *(c for c in rows[0] if c not in ("x", "n")))
    table = pd.DataFrame(rows, columns=list(columns))
    write_text(out / "study.csv", table.to_csv(index=False, lineterminator="\n"))
    if x_key == "epoch":
        title = f"{title}: {groups[0]['config']}"
    plots.study(rows, x_key, out / "study.png", title)
    return [out / "study.png", out / "study.csv"]
