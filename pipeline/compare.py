"""Compare runs: which configuration generalises best, and where overfitting starts.

    python -m pipeline.compare                                 # every run of `mnist`
    python -m pipeline.compare --filter "params.activation = 'elu'"
    python -m pipeline.compare --parent <sweep run id> --top 5 --out reports/compare
    python -m pipeline.compare --per-run                       # one row per run

Reads the runs through MLflow's client, so it works against any tracking URI (the project's
SQLite store by default, or a tracking server through MLFLOW_TRACKING_URI). Runs whose params
are equal but for `seed` are replicates of one configuration: the table has a row per
configuration with n, mean and std of train accuracy, test accuracy and gap, and the 95% t
interval of the mean test accuracy, sorted by that mean. `vs_best` says how each compares
with the best: "tie" when not distinguishable (95% t intervals of the mean test accuracy
overlap), "worse" when they do not, "n<2" when either has a single run (no interval). Under
--out: table.md and table.csv, accuracy.png (train and test accuracy side by side per
configuration, error bars of one std, the gap annotated) and curves.png (per-epoch mean train
versus test accuracy, a band of one std). --per-run gives today's table of runs instead.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
from pathlib import Path
from typing import Any

from pipeline import plots, stats, tracking
from pipeline.cli import fail
from pipeline.errors import PipelineError
from pipeline.io import write_text

COLUMNS = (
    "run", "data", "model", "activation", "optimizer", "epochs", "batch_size",
    "train_accuracy", "test_accuracy", "gap", "duration_s",
)  # fmt: skip
GROUP_COLUMNS = (
    "config", "data", "model", "activation", "optimizer", "epochs", "batch_size", "n", "seeds",
    "train_accuracy_mean", "train_accuracy_std", "test_accuracy_mean", "test_accuracy_std",
    "test_accuracy_ci_low", "test_accuracy_ci_high", "gap_mean", "gap_std", "vs_best",
)  # fmt: skip
# Summarised over each configuration's runs.
METRICS = ("train_accuracy", "test_accuracy", "gap")
# Train accuracy on the true labels, of runs with label noise (summarised where all have it).
CLEAN = "train_clean_accuracy"
# What `study_report` draws per epoch, from the runs' `epoch/<name>` histories.
EPOCH_METRICS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss")
# The printed and markdown table of configurations.
SHOWN = ("config", "n", "train", "test", "95% CI", "gap", "vs_best")
RULE = "not distinguishable: 95% t intervals of the mean test accuracy overlap"
# How many runs' (or groups') curves one chart can show legibly.
MAX_CURVES = 10


class NoRunsError(PipelineError):
    """Nothing matched: no experiment, no runs, or a filter that selects none."""


def find_runs(
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    filter_string: str = "",
    parent: str | None = None,
    top: int | None = None,
) -> list[Any]:
    """Evaluated runs (those with a test accuracy), best test accuracy first.

    Args:
        experiment: MLflow experiment name.
        filter_string: An MLflow search filter, e.g. `params.activation = 'elu'`.
        parent: Only the child runs of this sweep's parent run.
        top: Keep this many runs at most.
    """
    clauses = [c for c in (filter_string, "metrics.test_accuracy > -1") if c]
    if parent:
        clauses.append(f"tags.mlflow.parentRunId = '{parent}'")
    root = Path.cwd()
    try:
        runs = tracking.search_runs(
            root, experiment, " and ".join(clauses), ["metrics.test_accuracy DESC"], top or 1000
        )
    except ValueError as err:
        raise NoRunsError(f"bad filter {filter_string!r}: {err}") from None
    if runs is None:
        raise NoRunsError(f"no experiment {experiment!r} in {tracking.tracking_uri(root)}")
    if not runs:
        scope = [c for c in (filter_string, parent and f"sweep {parent}") if c]
        matching = f" matching {' and '.join(scope)}" if scope else ""
        raise NoRunsError(f"no evaluated runs in experiment {experiment!r}{matching}")
    return runs


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
                "train_accuracy": metrics.get("train_accuracy", float("nan")),
                "test_accuracy": metrics["test_accuracy"],
                "gap": metrics.get("generalization_gap", float("nan")),
                CLEAN: clean,
                "duration_s": round((end - run.info.start_time) / 1000, 1),
                "run_id": run.info.run_id,
                "seed": params.get("seed", "?"),
                "params": dict(params),
            }
        )
    return rows


def _number(text: str) -> float | None:
    """`text` as a number (`0.1`, `3000`, or a one-element list such as `[64]`), else None."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        value = float(inner)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


def _versus(group: dict[str, Any], best: dict[str, Any]) -> str:
    if group is best:
        return "best"
    verdict = stats.overlaps(group["test_summary"], best["test_summary"])
    return {None: "n<2", True: "tie", False: "worse"}[verdict]


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration (runs whose params are equal but for `seed`), best mean test
    accuracy first, with the columns of GROUP_COLUMNS.

    `config` names the params that differ between the configurations (the run name when none
    does); `vs_best` is "best", "tie" (95% t intervals of the mean test accuracy overlap: not
    distinguishable), "worse", or "n<2" (either has a single run: no interval to compare).
    """
    members: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        config = tuple(sorted((k, v) for k, v in row["params"].items() if k != "seed"))
        members.setdefault(config, []).append(row)
    keys = {key for config in members for key, _ in config}
    varying = sorted(k for k in keys if len({dict(c).get(k) for c in members}) > 1)
    groups = []
    for config, runs in members.items():
        params = dict(config)
        group = {c: runs[0][c] for c in COLUMNS[1:7]}
        # A key only some configurations have (elu's `activation_args.alpha`) names theirs.
        label = " ".join(f"{k}={params[k]}" for k in varying if k in params)
        group["config"] = label or runs[0]["run"]
        group["n"] = len(runs)
        seeds = sorted(
            (r["seed"] for r in runs), key=lambda s: (_number(s) is None, _number(s) or 0, s)
        )
        group["seeds"] = ",".join(seeds)
        summaries = {m: stats.summary([r[m] for r in runs]) for m in METRICS}
        if not any(math.isnan(r.get(CLEAN, math.nan)) for r in runs):  # label noise
            summaries[CLEAN] = stats.summary([r[CLEAN] for r in runs])
        for metric, summary in summaries.items():
            group[f"{metric}_mean"], group[f"{metric}_std"] = summary.mean, summary.std
        group["test_summary"] = test = summaries["test_accuracy"]  # for vs_best
        group["test_accuracy_ci_low"], group["test_accuracy_ci_high"] = test.ci_low, test.ci_high
        group["params"], group["run_ids"] = params, [r["run_id"] for r in runs]
        groups.append(group)
    groups.sort(key=lambda g: -g["test_accuracy_mean"])
    for group in groups:
        group["vs_best"] = _versus(group, groups[0])
    return groups


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _plus_minus(group: dict[str, Any], metric: str) -> str:
    std = group[f"{metric}_std"]
    return f"{group[f'{metric}_mean']:.4f} ± " + ("-" if math.isnan(std) else f"{std:.4f}")


def _group_cells(group: dict[str, Any]) -> list[str]:
    low, high = group["test_accuracy_ci_low"], group["test_accuracy_ci_high"]
    return [
        group["config"],
        str(group["n"]),
        _plus_minus(group, "train_accuracy"),
        _plus_minus(group, "test_accuracy"),
        "-" if math.isnan(low) else f"[{low:.4f}, {high:.4f}]",
        _plus_minus(group, "gap"),
        group["vs_best"],
    ]


def _markdown(header: tuple[str, ...], cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def _text(header: tuple[str, ...], cells: list[list[str]]) -> str:
    cells = [list(header), *cells]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def markdown(rows: list[dict[str, Any]]) -> str:
    return _markdown(COLUMNS, [[_cell(r[c]) for c in COLUMNS] for r in rows])


def text_table(rows: list[dict[str, Any]]) -> str:
    return _text(COLUMNS, [[_cell(r[c]) for c in COLUMNS] for r in rows])


def group_text_table(groups: list[dict[str, Any]]) -> str:
    """The configurations as printed: mean ± std cells (std `-` for a single run)."""
    return _text(SHOWN, [_group_cells(g) for g in groups])


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    """The rows' `columns`; nan (the std of a single run) as an empty cell."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {k: "" if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
        )
    write_text(path, buffer.getvalue())


def _histories(run_ids: list[str], key: str) -> list[list[float]]:
    """The runs' per-epoch `epoch/<key>` curves (runs without one left out)."""
    found = (tracking.metric_history(Path.cwd(), run_id, f"epoch/{key}") for run_id in run_ids)
    return [history for history in found if history]


def write_report(rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """Write table.md, table.csv, accuracy.png and curves.png under `out`, a row and a curve
    per run; return them."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=[*COLUMNS, "run_id"], extrasaction="ignore", lineterminator="\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "table.csv", buffer.getvalue())
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
            if (history := tracking.metric_history(Path.cwd(), row["run_id"], f"epoch/{name}"))
        }
        if series:
            curves[row["run"]] = series
    plots.curves_overlay(curves, out / "curves.png", f"{title}: train (solid) versus test (dashed)")
    return [out / n for n in ("table.md", "table.csv", "accuracy.png", "curves.png")]


def write_groups_report(groups: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """Write table.md, table.csv, accuracy.png and curves.png under `out`, a row and a mean
    curve per configuration (the groups of `group_rows`); return them."""
    _write_csv(out / "table.csv", (*GROUP_COLUMNS, "run_ids"),
               [{**g, "run_ids": " ".join(g["run_ids"])} for g in groups])  # fmt: skip
    cells = [_group_cells(g) for g in groups]
    write_text(out / "table.md", f"# {title}\n\n{RULE}.\n\n" + _markdown(SHOWN, cells))

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
            if (histories := _histories(group["run_ids"], name))
        }
        if series:
            curves[group["config"]] = series
    subtitle = "mean train (solid) versus test (dashed), ± one std"
    plots.curves_band(curves, out / "curves.png", f"{title}: {subtitle}")
    return [out / n for n in ("table.md", "table.csv", "accuracy.png", "curves.png")]


def _epoch_rows(group: dict[str, Any]) -> list[dict[str, Any]]:
    """Per epoch, mean and std over the group's runs of the epoch metrics and the gap."""
    runs = []
    for run_id in group["run_ids"]:
        curves = {
            k: tracking.metric_history(Path.cwd(), run_id, f"epoch/{k}") for k in EPOCH_METRICS
        }
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
    numbers = [_number(t) for t in texts]
    # Numbers on a numeric axis; anything else (activations, `None`) as sorted categories.
    xs = numbers if None not in numbers else texts
    # A label noise study: its train accuracy on the true labels too.
    noisy = any(float(g["params"].get("data.label_noise", 0)) > 0 for g in groups)
    clean = noisy and all(f"{CLEAN}_mean" in g for g in groups)
    metrics = [*METRICS, *([CLEAN] if clean else [])]
    columns = [f"{m}_{s}" for m in metrics for s in ("mean", "std")]
    rows = [
        {"x": x, "n": g["n"], **{c: g[c] for c in columns}} for x, g in zip(xs, groups, strict=True)
    ]
    return sorted(rows, key=lambda r: r["x"])


def study_report(groups: list[dict[str, Any]], x_key: str, out: Path, title: str) -> list[Path]:
    """Write study.png and study.csv under `out`: train and test accuracy and their gap, mean
    ± std over seeds, against the swept param `x_key` (one point per configuration), or
    against the epoch (`x_key` "epoch": the first, best, configuration's runs, their train and
    test loss too); return them.

    Raises:
        ValueError: `x_key` is neither "epoch" nor a param of the runs.
        NoRunsError: "epoch", and the runs logged no per-epoch metrics.
    """
    rows = _epoch_rows(groups[0]) if x_key == "epoch" else _param_rows(groups, x_key)
    columns = ("x", "n", *(c for c in rows[0] if c not in ("x", "n")))
    _write_csv(out / "study.csv", columns, rows)
    if x_key == "epoch":
        title = f"{title}: {groups[0]['config']}"
    plots.study(rows, x_key, out / "study.png", title)
    return [out / "study.png", out / "study.csv"]


def compare(
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    filter_string: str = "",
    parent: str | None = None,
    top: int | None = None,
    out: Path = Path("reports/compare"),
    per_run: bool = False,
) -> list[dict[str, Any]]:
    """Find the runs, print the table, write the report; return its rows: the configurations
    of `group_rows`, or with `per_run` the runs of `rows_of`.

    Raises:
        NoRunsError: nothing to compare.
    """
    rows = rows_of(find_runs(experiment, filter_string, parent, top))
    if per_run:
        print(text_table(rows))
        write_report(rows, out, f"{experiment}: {len(rows)} runs by test accuracy")
    else:
        groups = group_rows(rows)
        print(group_text_table(groups))
        print(f"\n{RULE}")
        title = f"{experiment}: {len(groups)} configurations of {len(rows)} runs"
        write_groups_report(groups, out, f"{title} by mean test accuracy")
        rows = groups
    print(f"\nwrote {out}/table.md, table.csv, accuracy.png, curves.png")
    return rows


def main(argv: list[str] | None = None) -> None:
    """Compare MLflow runs by test accuracy and overfitting."""

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument(
        "--experiment", default=tracking.DEFAULT_EXPERIMENT,
        help="runs go to an experiment named after their dataset: mnist, fashion_mnist, ...",
    )  # fmt: skip
    parser.add_argument("--filter", default="", help="MLflow filter: \"params.activation = 'elu'\"")
    parser.add_argument("--parent", help="only the jobs of this sweep (its parent run id)")
    parser.add_argument("--top", type=int, help="keep the N best runs")
    parser.add_argument("--out", type=Path, default=Path("reports/compare"))
    parser.add_argument(
        "--per-run", action="store_true",
        help="a row per run, instead of per configuration (runs equal but for their seed)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.top is not None and args.top < 1:
        parser.error(f"--top: invalid value {args.top}; must be a positive integer")
    try:
        compare(args.experiment, args.filter, args.parent, args.top, args.out, args.per_run)
    except NoRunsError as err:
        fail(err)


if __name__ == "__main__":
    main()
