"""Compare runs: which configuration generalises best, and where overfitting starts.

    python -m pipeline.compare                                 # every run of `mnist`
    python -m pipeline.compare --filter "params.activation = 'elu'"
    python -m pipeline.compare --parent <sweep run id> --top 5 --out reports/compare
    python -m pipeline.compare --per-run                       # one row per run
    python -m pipeline.compare --detect 0.001                  # seeds to tell 0.1% apart

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
import csv
import io
import math
import statistics
from pathlib import Path
from typing import Any

from pipeline import plots, stats, tracking
from pipeline.cli import fail
from pipeline.errors import PipelineError
from pipeline.io import write_text

COLUMNS = (
    "run", "data", "model", "activation", "optimizer", "epochs", "batch_size",
    "train_accuracy", "val_accuracy", "test_accuracy", "gap", "duration_s",
)  # fmt: skip
GROUP_COLUMNS = (
    "config", "data", "model", "activation", "optimizer", "epochs", "batch_size", "n", "seeds",
    "train_accuracy_mean", "train_accuracy_std", "val_accuracy_mean", "val_accuracy_std",
    "test_accuracy_mean", "test_accuracy_std", "test_accuracy_ci_low", "test_accuracy_ci_high",
    "gap_mean", "gap_std", "ranked_on", "diff_vs_best", "diff_ci_low", "diff_ci_high",
    "p_value", "p_holm", "vs_best", "seeds_needed",
)  # fmt: skip
# Summarised over each configuration's runs.
METRICS = ("train_accuracy", "val_accuracy", "test_accuracy", "gap")
# What configurations are ranked on: validation when every run has it (the test set is then
# looked at only to report), else the test set.
VALIDATION, TEST = "val_accuracy", "test_accuracy"
NAMES = {VALIDATION: "validation accuracy", TEST: "test accuracy"}
# Train accuracy on the true labels, of runs with label noise (summarised where all have it).
CLEAN = "train_clean_accuracy"
# What `study_report` draws per epoch, from the runs' `epoch/<name>` histories.
EPOCH_METRICS = ("train_accuracy", "test_accuracy", "train_loss", "test_loss")
# The printed and markdown table of configurations.
SHOWN = (
    "config", "n", "train", "val", "test", "95% CI", "gap", "best - this [95% CI]", "p_holm",
    "vs_best", "seeds_needed",
)  # fmt: skip
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
    """Evaluated runs (those with a test accuracy), best first on the ranking metric
    (`ranking_metric`: validation accuracy when every run has one, else test accuracy).

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
        # All of them: which metric ranks them (and so which are the top ones) depends on
        # whether every one has a validation score.
        runs = tracking.search_runs(root, experiment, " and ".join(clauses), [], 50_000)
    except ValueError as err:
        raise NoRunsError(f"bad filter {filter_string!r}: {err}") from None
    if runs is None:
        raise NoRunsError(f"no experiment {experiment!r} in {tracking.tracking_uri(root)}")
    if not runs:
        scope = [c for c in (filter_string, parent and f"sweep {parent}") if c]
        matching = f" matching {' and '.join(scope)}" if scope else ""
        raise NoRunsError(f"no evaluated runs in experiment {experiment!r}{matching}")
    metric = VALIDATION if all(VALIDATION in r.data.metrics for r in runs) else TEST
    runs.sort(key=lambda r: -r.data.metrics[metric])
    return runs[:top]


def ranking_metric(rows: list[dict[str, Any]]) -> str:
    """`val_accuracy` when every row has one, else `test_accuracy`."""
    return VALIDATION if all(not math.isnan(r.get(VALIDATION, math.nan)) for r in rows) else TEST


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


def _number(text: str) -> float | None:
    """`text` as a number (`0.1`, `3000`, or a one-element list such as `[64]`), else None."""
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        value = float(inner)
    except ValueError:
        return None
    return int(value) if value.is_integer() else value


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


def group_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration (runs whose params are equal but for `seed`), the best first,
    with the columns of GROUP_COLUMNS.

    The ranking metric (`ranked_on`) is the mean validation accuracy when every run has one,
    else the mean test accuracy. `config` names the params that differ between the
    configurations (the run name when none does). Each configuration with n >= 2 is tested
    against the best (`_against_best`): `vs_best` is "best", "worse" (Holm-adjusted Welch p
    below 5%), "tie", or "n<2" (it or the best has a single run: nothing to test).
    """
    metric = ranking_metric(rows)
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
        summaries = {m: stats.summary([r.get(m, math.nan) for r in runs]) for m in METRICS}
        if not any(math.isnan(r.get(CLEAN, math.nan)) for r in runs):  # label noise
            summaries[CLEAN] = stats.summary([r[CLEAN] for r in runs])
        for name, summary in summaries.items():
            group[f"{name}_mean"], group[f"{name}_std"] = summary.mean, summary.std
        test = summaries["test_accuracy"]
        group["test_accuracy_ci_low"], group["test_accuracy_ci_high"] = test.ci_low, test.ci_high
        group["ranked_on"], group["samples"] = metric, [r[metric] for r in runs]
        group["params"], group["run_ids"] = params, [r["run_id"] for r in runs]
        groups.append(group)
    groups.sort(key=lambda g: -g[f"{metric}_mean"])
    _against_best(groups, metric)
    return groups


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


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _plus_minus(group: dict[str, Any], metric: str) -> str:
    mean, std = group[f"{metric}_mean"], group[f"{metric}_std"]
    if math.isnan(mean):
        return "-"
    return f"{mean:.4f} ± " + ("-" if math.isnan(std) else f"{std:.4f}")


def _difference(group: dict[str, Any]) -> str:
    """best - this, with its 95% Welch interval when it was tested."""
    diff, low, high = group["diff_vs_best"], group["diff_ci_low"], group["diff_ci_high"]
    interval = "" if math.isnan(low) else f" [{low:+.4f}, {high:+.4f}]"
    return f"{diff:+.4f}{interval}"


def _p(p: float) -> str:
    return "-" if math.isnan(p) else "<0.001" if p < 0.001 else f"{p:.3f}"


def _group_cells(group: dict[str, Any]) -> list[str]:
    low, high = group["test_accuracy_ci_low"], group["test_accuracy_ci_high"]
    seeds = group["seeds_needed"]
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
        "-" if math.isnan(seeds) else (f">{stats.MAX_SEEDS}" if math.isinf(seeds) else str(seeds)),
    ]


def _group_table(groups: list[dict[str, Any]]) -> tuple[tuple[str, ...], list[list[str]]]:
    """The header and cells of the configurations' table: without the validation column
    when no run has a validation score."""
    cells = [_group_cells(g) for g in groups]
    if all(math.isnan(g["val_accuracy_mean"]) for g in groups):
        return SHOWN[:3] + SHOWN[4:], [c[:3] + c[4:] for c in cells]
    return SHOWN, cells


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
    return _text(*_group_table(groups))


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
    text = f"# {title}\n\n{rule(groups)}\n\n" + _markdown(*_group_table(groups))
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
        metric = NAMES[ranking_metric(rows)]
        write_report(rows, out, f"{experiment}: {len(rows)} runs by {metric}")
    else:
        groups = group_rows(rows)
        print(group_text_table(groups))
        print(f"\n{rule(groups)}")
        metric = NAMES[groups[0]["ranked_on"]]
        title = f"{experiment}: {len(groups)} configurations of {len(rows)} runs"
        write_groups_report(groups, out, f"{title} by mean {metric}")
        rows = groups
    print(f"\nwrote {out}/table.md, table.csv, accuracy.png, curves.png")
    return rows


def plan_seeds(groups: list[dict[str, Any]], difference: float) -> list[str]:
    """Per configuration with n >= 2: the seeds per configuration at which a two-sided 5%
    t-test would detect `difference` with 80% power, given its measured std."""
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


def main(argv: list[str] | None = None) -> None:
    """Compare MLflow runs by accuracy and overfitting."""

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
    parser.add_argument(
        "--detect",
        type=float,
        metavar="DIFF",
        help="print the seeds per configuration that would detect an accuracy difference of "
        "DIFF (0.001 = 0.1%%) with 80%% power; writes nothing",
    )
    args = parser.parse_args(argv)
    if args.top is not None and args.top < 1:
        parser.error(f"--top: invalid value {args.top}; must be a positive integer")
    if args.detect is not None and not 0 < args.detect < 1:
        parser.error(
            f"--detect: invalid value {args.detect}; must be an accuracy difference between "
            "0 and 1 (0.001 is 0.1%)"
        )
    try:
        if args.detect is not None:
            runs = find_runs(args.experiment, args.filter, args.parent, args.top)
            print("\n".join(plan_seeds(group_rows(rows_of(runs)), args.detect)))
            return
        compare(args.experiment, args.filter, args.parent, args.top, args.out, args.per_run)
    except NoRunsError as err:
        fail(err)


if __name__ == "__main__":
    main()
