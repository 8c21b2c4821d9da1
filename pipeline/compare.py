"""Compare runs: which configuration generalises best, and where overfitting starts.

    python -m pipeline.compare                                 # every run of `mnist`
    python -m pipeline.compare --filter "params.activation = 'elu'"
    python -m pipeline.compare --parent <sweep run id> --top 5 --out reports/compare

Reads the runs through MLflow's client, so it works against any tracking URI (the project's
SQLite store by default, or a tracking server through MLFLOW_TRACKING_URI). Prints a table
sorted by test accuracy and writes, under --out: table.md and table.csv, accuracy.png (train
and test accuracy side by side per run, the gap annotated) and curves.png (per-epoch train
versus test accuracy of the runs, overlaid).
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path
from typing import Any

from pipeline import plots, tracking
from pipeline.cli import fail
from pipeline.errors import PipelineError
from pipeline.io import write_text

COLUMNS = (
    "run", "data", "model", "activation", "optimizer", "epochs", "batch_size",
    "train_accuracy", "test_accuracy", "gap", "duration_s",
)  # fmt: skip
# How many runs' curves one chart can show legibly.
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
                "duration_s": round((end - run.info.start_time) / 1000, 1),
                "run_id": run.info.run_id,
            }
        )
    return rows


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def text_table(rows: list[dict[str, Any]]) -> str:
    cells = [list(COLUMNS)] + [[_cell(r[c]) for c in COLUMNS] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(COLUMNS))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells)
    return "\n".join(lines)


def write_report(rows: list[dict[str, Any]], out: Path, title: str) -> list[Path]:
    """Write table.md, table.csv, accuracy.png and curves.png under `out`; return them."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*COLUMNS, "run_id"], lineterminator="\n")
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


def compare(
    experiment: str = tracking.DEFAULT_EXPERIMENT,
    filter_string: str = "",
    parent: str | None = None,
    top: int | None = None,
    out: Path = Path("reports/compare"),
) -> list[dict[str, Any]]:
    """Find the runs, print the table, write the report; return the rows.

    Raises:
        NoRunsError: nothing to compare.
    """
    rows = rows_of(find_runs(experiment, filter_string, parent, top))
    print(text_table(rows))
    write_report(rows, out, f"{experiment}: {len(rows)} runs by test accuracy")
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
    args = parser.parse_args(argv)
    if args.top is not None and args.top < 1:
        parser.error(f"--top: invalid value {args.top}; must be a positive integer")
    try:
        compare(args.experiment, args.filter, args.parent, args.top, args.out)
    except NoRunsError as err:
        fail(err)


if __name__ == "__main__":
    main()
