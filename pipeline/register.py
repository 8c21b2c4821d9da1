"""`python -m pipeline.register <run id> | --best [--filter ...]`: put a run's model in the
MLflow model registry and point the alias `champion` at it.

The registered model is named after the run's dataset (`mnist`, `fashion_mnist`; `--name`
to choose). `--best` picks, among the finished runs of the experiment that logged a model,
the one with the best validation accuracy when every run has one (as `pipeline.compare`
ranks), else the best test accuracy: a model chosen on the test set has an optimistic test
score (the choice used it), so train with `val_split` to choose fairly.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from pipeline.cli import fail
from pipeline.errors import PipelineError
from pipeline.tracking.models import CHAMPION, register, run_model
from pipeline.tracking.search import search_runs
from pipeline.tracking.store import DEFAULT_EXPERIMENT, experiment_id, tracking_uri

# The final model's scores (evaluate): on the validation rows with val_split > 0, and on test.
VALIDATION, TEST = "val_accuracy", "test_accuracy"


def best_run(uri: str, experiment: str, filter_string: str) -> tuple[Any, str]:
    """The best finished run of `experiment` (in the store at `uri`) matching `filter_string`,
    and the metric that chose it: `val_accuracy` when every such run has it, else
    `test_accuracy`.

    Raises:
        PipelineError: no experiment, or no run matches (one line).
    """
    where = " and ".join(f for f in ("attributes.status = 'FINISHED'", filter_string) if f)
    try:
        runs = search_runs(uri, experiment, where, [], 10000)
    except ValueError as err:
        raise PipelineError(f"--filter {filter_string!r}: {err}") from None
    if runs is None:
        raise PipelineError(f"no experiment {experiment!r} in {uri}")
    runs = [r for r in runs if TEST in r.data.metrics]
    if not runs:
        raise PipelineError(
            f"no finished, evaluated run in experiment {experiment!r} matches "
            f"{filter_string or 'the experiment'!r}"
        )
    metric = VALIDATION if all(VALIDATION in r.data.metrics for r in runs) else TEST
    chosen = max(runs, key=lambda r: r.data.metrics[metric])
    return chosen, metric


def main(argv: list[str] | None = None) -> None:
    """Register a run's model (or the best run's) and make it the `champion`."""
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.register",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("run_id", nargs="?", help="the MLflow run whose model to register")
    which.add_argument("--best", action="store_true", help="the experiment's best run")
    parser.add_argument(
        "--filter",
        default="",
        help="MLflow search filter for --best, e.g. \"params.model.name = 'cnn'\"",
    )
    parser.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help="where --best searches (default: %(default)s)",
    )
    parser.add_argument("--name", help="registered model name (default: the run's dataset)")
    args = parser.parse_args(argv)
    if args.filter and not args.best:
        parser.error("--filter goes with --best")
    uri = tracking_uri(Path.cwd())
    try:
        experiment_id(uri, args.experiment)  # the store answers, in seconds
        if args.best:
            run, metric = best_run(uri, args.experiment, args.filter)
            print(
                f"best run by {metric}: {run.info.run_name} ({run.info.run_id}), "
                f"{metric} {run.data.metrics[metric]:.4f}"
            )
            if metric == TEST:
                print(
                    "note: chosen on the test set, so its test accuracy is optimistic "
                    "(train with val_split > 0 to choose on validation data)"
                )
            run_id = run.info.run_id
        else:
            run_id = args.run_id
        run, _ = run_model(uri, run_id)
        name = args.name or run.data.params.get("data.name", DEFAULT_EXPERIMENT)
        version = register(uri, run_id, name)
    except PipelineError as err:
        fail(err)
    print(
        f"registered {name} version {version} from run {run_id}; alias "
        f"{CHAMPION} -> version {version} (models:/{name}@{CHAMPION})"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
