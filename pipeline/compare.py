"""Compare runs: which configuration generalises best, and where overfitting starts.

    python -m pipeline.compare                                 # every run of `mnist`
    python -m pipeline.compare --filter "params.activation = 'elu'"
    python -m pipeline.compare --parent <sweep run id> --top 5 --out reports/compare
    python -m pipeline.compare --per-run                       # one row per run
    python -m pipeline.compare --detect 0.001                  # seeds to tell 0.1% apart
    python -m pipeline.compare --search mlp-mnist              # a search's trials, ranked

Reads the runs through MLflow's client, so it works against any tracking URI. Runs whose params
are equal but for `seed` are replicates of one configuration: a row per configuration with n,
mean and std of each accuracy and the gap. Configurations are ranked on mean validation
accuracy when every run has one (`val_split > 0`), else on mean test accuracy (which makes the
best's test score optimistic: the choice looked at it). Each is tested against the best with
Welch's t-test, Holm-adjusted over the report's comparisons: `worse` below 5%, else `tie`, with
the seeds a 5% test would need to see the difference with 80% power. Under --out: table.md,
table.csv, accuracy.png (train and test accuracy per configuration, error bars of one std) and
curves.png (per-epoch mean train versus test accuracy, a band of one std).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline import plots, stats
from pipeline.cli import fail
from pipeline.errors import ConfigError
from pipeline.io import write_text
from pipeline.replicates import (
    CLEAN,
    GROUP_COLUMNS,
    NAMES,
    SETUP,
    VALIDATION,
    NoRunsError,
    group_rows,
    plan_seeds,
    plus_minus,
    ranking_metric,
    rule,
)
from pipeline.tracking.search import metric_history, search_runs
from pipeline.tracking.store import DEFAULT_EXPERIMENT, tracking_uri

COLUMNS = (
    "run",
    *SETUP,
    "train_accuracy",
    "val_accuracy",
    "test_accuracy",
    "gap",
    "duration_s",
)
# The printed and markdown table of configurations.
SHOWN = (
    "config",
    "n",
    "train",
    "val",
    "test",
    "95% CI",
    "gap",
    "best - this [95% CI]",
    "p_holm",
    "vs_best",
    "seeds_needed",
)
# How many runs' (or groups') curves one chart can show legibly.
MAX_CURVES = 10


def find_runs(
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    filter_string: str = "",
    parent: str | None = None,
    top: int | None = None,
) -> list[Any]:
    """Finished, evaluated runs (those with a test accuracy), best first on the ranking metric
    (`ranking_metric`: validation accuracy when every run has one, else test accuracy).

    Args:
        uri: The tracking store (`tracking_uri`).
        experiment: MLflow experiment name.
        filter_string: An MLflow search filter, e.g. `params.activation = 'elu'`.
        parent: Only the child runs of this sweep's parent run.
        top: Keep this many runs at most.
    """
    # Finished runs only: a run FAILED, KILLED or still RUNNING (its process may have vanished,
    # `python -m pipeline.tracking reap`) is no result.
    finished = "attributes.status = 'FINISHED'"
    clauses = [c for c in (filter_string, "metrics.test_accuracy > -1", finished) if c]
    if parent:
        clauses.append(f"tags.mlflow.parentRunId = '{parent}'")
    try:
        # All of them: which metric ranks them (and so which are the top ones) depends on
        # whether every one has a validation score.
        runs = search_runs(uri, experiment, " and ".join(clauses), [], 50_000)
    except ValueError as err:
        raise NoRunsError(f"bad filter {filter_string!r}: {err}") from None
    if runs is None:
        raise NoRunsError(f"no experiment {experiment!r} in {uri}")
    if not runs:
        scope = [c for c in (filter_string, parent and f"sweep {parent}") if c]
        matching = f" matching {' and '.join(scope)}" if scope else ""
        raise NoRunsError(f"no evaluated runs in experiment {experiment!r}{matching}")
    metric = ranking_metric([r.data.metrics for r in runs])
    runs.sort(key=lambda r: -r.data.metrics[metric])
    return runs[:top]


def rows_of(runs: list[Any]) -> list[dict[str, Any]]:
    """One row per run with the columns of the report."""
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        end = run.info.end_time or run.info.start_time
        # Train accuracy on the true labels (pipeline.data.noise): without label noise, the
        # labels fitted on are the true ones.
        nan = float("nan")
        noisy = float(params.get("data.label_noise", 0)) > 0
        clean = metrics.get(CLEAN, nan if noisy else metrics.get("train_accuracy", nan))
        rows.append(
            {
                "run": run.info.run_name,
                "data": params.get("data.name", "?"),
                "model": params.get("model.name", "?"),
                "activation": params.get("activation", "?"),
                "optimizer": params.get("optimizer.name", "?"),
                "epochs": params.get("epochs", "?"),
                "batch_size": params.get("batch_size", "?"),
                "train_accuracy": metrics.get("train_accuracy", nan),
                # The final model on the validation rows (evaluate, with val_split > 0).
                "val_accuracy": metrics.get(VALIDATION, nan),
                "test_accuracy": metrics["test_accuracy"],
                "gap": metrics.get("generalization_gap", nan),
                CLEAN: clean,
                "duration_s": round((end - run.info.start_time) / 1000, 1),
                "run_id": run.info.run_id,
                "seed": params.get("seed", "?"),
                "params": dict(params),
            }
        )
    return rows


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _plus_minus(group: dict[str, Any], metric: str) -> str:
    return plus_minus(group[f"{metric}_mean"], group[f"{metric}_std"])


def _difference(group: dict[str, Any]) -> str:
    """best - this, with its 95% Welch interval when it was tested."""
    diff, low, high = group["diff_vs_best"], group["diff_ci_low"], group["diff_ci_high"]
    interval = "" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]"
    return f"{diff:+.4f}{interval}"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _seeds(seeds: float) -> str:
    """Seeds needed: a count, `inf` beyond stats.MAX_SEEDS, empty when it does not apply."""
    return "" if math.isnan(seeds) else "inf" if math.isinf(seeds) else str(int(seeds))


def _group_cells(group: dict[str, Any]) -> list[str]:
    low, high = group["test_accuracy_ci_low"], group["test_accuracy_ci_high"]
    return [
        group["config"],
        str(group["n"]),
        _plus_minus(group, "train_accuracy"),
        _plus_minus(group, "val_accuracy"),
        _plus_minus(group, "test_accuracy"),
        "-" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]",
        _plus_minus(group, "gap"),
        _difference(group),
        _p(group["p_holm"]),
        group["vs_best"],
        _seeds(group["seeds_needed"]) or "-",
    ]


def _group_table(groups: list[dict[str, Any]]) -> pd.DataFrame:
    """The configurations' table as shown: without the validation column when no run has a
    validation score."""
    table = pd.DataFrame([_group_cells(g) for g in groups], columns=list(SHOWN))
    if all(math.isnan(g["val_accuracy_mean"]) for g in groups):
        return table.drop(columns="val")
    return table


def _run_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame([[_cell(r[c]) for c in COLUMNS] for r in rows], columns=list(COLUMNS))


def _markdown(table: pd.DataFrame) -> str:
    # The cells are already formatted: tabulate must not read them as numbers again.
    return table.to_markdown(index=False, disable_numparse=True) + "\n"


def markdown(rows: list[dict[str, Any]]) -> str:
    return _markdown(_run_table(rows))


def text_table(rows: list[dict[str, Any]]) -> str:
    return _run_table(rows).to_string(index=False)


def group_text_table(groups: list[dict[str, Any]]) -> str:
    """The configurations as printed: mean ± std cells (std `-` for a single run)."""
    return _group_table(groups).to_string(index=False)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    """The table as CSV; nan (the std of a single run, what was not tested) as empty."""
    write_text(path, table.to_csv(index=False, lineterminator="\n"))


def _histories(uri: str, run_ids: list[str], key: str) -> list[list[float]]:
    """The runs' per-epoch `epoch/<key>` curves (runs without one left out)."""
    found = (metric_history(uri, run_id, f"epoch/{key}") for run_id in run_ids)
    return [history for history in found if history]


def write_report(uri: str, rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """Write table.md, table.csv, accuracy.png and curves.png under `out`, a row and a curve
    per run (read from the store at `uri`); return them."""
    _write_csv(out / "table.csv", pd.DataFrame(rows, columns=[*COLUMNS, "run_id"]))
    write_text(out / "table.md", f"# {title}\n\n" + markdown(rows))

    labels = [r["run"] for r in rows]
    plots.accuracy_bars(
        labels,
        [r["train_accuracy"] for r in rows],
        [r["test_accuracy"] for r in rows],
        out / "accuracy.png",
        title,
    )
    curves = {}
    for row in rows[:MAX_CURVES]:
        series = {
            name: history
            for name in ("train_accuracy", "test_accuracy")
            if (history := metric_history(uri, row["run_id"], f"epoch/{name}"))
        }
        if series:
            curves[row["run"]] = series
    plots.curves_overlay(curves, out / "curves.png", f"{title}: train (solid) versus test (dashed)")
    return [out / n for n in ("table.md", "table.csv", "accuracy.png", "curves.png")]


def write_groups_report(
    uri: str, groups: list[dict[str, Any]], out: Path, title: str
) -> list[Path]:
    """Write table.md, table.csv, accuracy.png and curves.png under `out`, a row and a mean
    curve per configuration (the groups of `group_rows`; curves from the store at `uri`);
    return them."""
    table = pd.DataFrame(groups, columns=[*GROUP_COLUMNS, "run_ids"])
    table["seeds_needed"] = table["seeds_needed"].map(_seeds)
    table["run_ids"] = table["run_ids"].map(" ".join)
    _write_csv(out / "table.csv", table)
    text = f"# {title}\n\n{rule(groups)}\n\n" + _markdown(_group_table(groups))
    write_text(out / "table.md", text)

    plots.accuracy_bars(
        [g["config"] for g in groups],
        [g["train_accuracy_mean"] for g in groups],
        [g["test_accuracy_mean"] for g in groups],
        out / "accuracy.png",
        f"{title}, ± one std",
        [g["train_accuracy_std"] for g in groups],
        [g["test_accuracy_std"] for g in groups],
    )
    curves = {}
    for group in groups[:MAX_CURVES]:
        series = {
            name: stats.curve_summary(histories)
            for name in ("train_accuracy", "test_accuracy")
            if (histories := _histories(uri, group["run_ids"], name))
        }
        if series:
            curves[group["config"]] = series
    subtitle = "mean train (solid) versus test (dashed), ± one std"
    plots.curves_band(curves, out / "curves.png", f"{title}: {subtitle}")
    return [out / n for n in ("table.md", "table.csv", "accuracy.png", "curves.png")]


def compare(
    uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    filter_string: str = "",
    parent: str | None = None,
    top: int | None = None,
    out: Path = Path("reports/compare"),
    per_run: bool = False,
) -> list[dict[str, Any]]:
    """Find the runs in the store at `uri`, print the table, write the report; return its
    rows: the configurations of `group_rows`, or with `per_run` the runs of `rows_of`.

    Raises:
        NoRunsError: nothing to compare.
    """
    rows = rows_of(find_runs(uri, experiment, filter_string, parent, top))
    if per_run:
        print(text_table(rows))
        metric = NAMES[ranking_metric(rows)]
        write_report(uri, rows, out, f"{experiment}: {len(rows)} runs by {metric}")
    else:
        groups = group_rows(rows)
        print(group_text_table(groups))
        print(f"\n{rule(groups)}")
        metric = NAMES[groups[0]["ranked_on"]]
        title = f"{experiment}: {len(groups)} configurations of {len(rows)} runs"
        write_groups_report(uri, groups, out, f"{title} by mean {metric}")
        rows = groups
    print(f"\nwrote {out}/table.md, table.csv, accuracy.png, curves.png")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Compare MLflow runs by accuracy and overfitting."""

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help="runs go to an experiment named after their dataset: mnist, fashion_mnist, ...",
    )
    parser.add_argument("--filter", default="", help="MLflow filter: \"params.activation = 'elu'\"")
    parser.add_argument("--parent", help="only the jobs of this sweep (its parent run id)")
    parser.add_argument("--top", type=int, help="keep the N best runs")
    parser.add_argument("--out", type=Path, default=Path("reports/compare"))
    parser.add_argument(
        "--per-run",
        action="store_true",
        help="a row per run, instead of per configuration (runs equal but for their seed)",
    )
    parser.add_argument(
        "--detect",
        type=float,
        metavar="DIFF",
        help="print the seeds per configuration that would detect an accuracy difference of "
        "DIFF (0.001 = 0.1%%) with 80%% power; writes nothing",
    )
    parser.add_argument("--search", metavar="STUDY", help="a search's trials, ranked")
    parser.add_argument("--storage", help="the search's Optuna storage (default: optuna.db)")
    args = parser.parse_args(argv)
    if args.top is not None and args.top < 1:
        parser.error(f"--top: invalid value {args.top}; must be a positive integer")
    if args.detect is not None and not 0 < args.detect < 1:
        parser.error(
            f"--detect: invalid value {args.detect}; must be an accuracy difference between "
            "0 and 1 (0.001 is 0.1%)"
        )
    uri = tracking_uri(Path.cwd())
    try:
        if args.search:
            from pipeline.search.ranking import show

            show(uri, args.search, args.storage)
            return
        if args.detect is not None:
            runs = find_runs(uri, args.experiment, args.filter, args.parent, args.top)
            print("\n".join(plan_seeds(group_rows(rows_of(runs)), args.detect)))
            return
        compare(uri, args.experiment, args.filter, args.parent, args.top, args.out, args.per_run)
    except (NoRunsError, ConfigError) as err:
        fail(err)


if __name__ == "__main__":
    main()
