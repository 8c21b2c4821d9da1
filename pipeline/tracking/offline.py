"""Logging a finished job's directory into MLflow later, when its store failed during the
run: `python -m pipeline.tracking log <job dir> ...`.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from pipeline.errors import TrackingError
from pipeline.paths import Paths
from pipeline.tracking.liveness import STALE_MINUTES, reap_command
from pipeline.tracking.runs import (
    evaluation_files,
    log_artifact,
    log_datasets,
    log_metrics,
    log_outputs,
    log_params,
    per_class_key,
    recording,
    run_exists,
)
from pipeline.tracking.store import experiment_id, retrying, tracking_uri


def _evaluation_metrics(paths: Paths) -> dict[str, float]:
    # Numbers only: `heldout` names a set (a tag of the run).
    metrics = {
        k: v for k, v in json.loads(paths.metrics.read_text()).items() if not isinstance(v, str)
    }
    with open(paths.per_class, newline="") as f:
        rows = list(csv.DictReader(f))
    return {**metrics, **{per_class_key(i): float(r["test_accuracy"]) for i, r in enumerate(rows)}}


def log_job(out: Path) -> str:
    """Log a finished job's directory into MLflow as a complete run: into the run it started,
    when the store has it (the store failed during the run), else into a new run. Epochs the
    run already has are not logged twice.

    The store is the one the run used, unless `MLFLOW_TRACKING_URI` names another.

    Returns:
        The run's id.

    Raises:
        TrackingError: the store cannot be used, or the directory holds no finished run.
    """
    import mlflow

    paths = Paths(root=out, out=out)
    try:
        record = json.loads(paths.run_info.read_text())
        missing = [p for p in (paths.model, paths.history, paths.metrics) if not p.exists()]
    except (OSError, ValueError) as err:
        raise TrackingError(f"{out} holds no finished run ({err})") from None
    if missing:
        names = ", ".join(str(p.relative_to(out)) for p in missing)
        raise TrackingError(f"{out} holds no finished run (no {names})")
    uri = os.environ.get("MLFLOW_TRACKING_URI") or record["tracking_uri"]
    exp_id = experiment_id(uri, record["experiment"])
    known = run_exists(uri, record["run_id"])
    run_args = {"run_id": record["run_id"]} if known else {
        "experiment_id": exp_id, "run_name": record["run_name"],
        "tags": {**record["tags"], "logged_from": str(out)},
    }  # fmt: skip
    with recording(retrying)(mlflow.start_run, **run_args) as run:
        client = mlflow.MlflowClient(uri)
        if not known:
            log_params(record["params"])
            log_datasets(record["datasets"]["source"], record["datasets"]["splits"])
        with open(paths.history, newline="") as f:
            rows = list(csv.DictReader(f))
        for key in [k for k in rows[0] if k != "epoch"] if rows else []:
            logged = {m.step for m in client.get_metric_history(run.info.run_id, f"epoch/{key}")}
            for row in rows:
                if int(row["epoch"]) not in logged:
                    log_metrics({f"epoch/{key}": float(row[key])}, step=int(row["epoch"]))
        log_outputs(paths, record)
        log_metrics(_evaluation_metrics(paths))
        for path, directory in evaluation_files(paths):
            log_artifact(path, directory)
    print(f"MLflow run {record['run_name']} ({run.info.run_id}) logged from {out} in {uri}")
    return run.info.run_id


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.tracking log <job dir> ...`: log finished jobs into MLflow;
    `python -m pipeline.tracking reap`: end the runs whose process vanished."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    log = commands.add_parser("log", help="log finished jobs whose store failed during the run")
    log.add_argument("job_dirs", nargs="+", type=Path, help="a run's job directory")
    reap = commands.add_parser("reap", help="end as FAILED the RUNNING runs whose process is gone")
    reap.add_argument("--stale", default=str(STALE_MINUTES), metavar="MINUTES",
                      help="a run elsewhere is gone after this long without a heartbeat "
                      "(default: %(default)s)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.command == "reap":
        _reap(args.stale)
    failed = 0
    for job_dir in args.job_dirs:
        try:
            log_job(job_dir.resolve())
        except TrackingError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    sys.exit(1 if failed else 0)


def _reap(stale: str) -> None:
    """The reap command: every experiment of the store (`tracking_uri`)."""
    import math
    import sys

    try:
        minutes = float(stale)
    except ValueError:
        minutes = math.nan
    if not (math.isfinite(minutes) and minutes > 0):
        print(f"error: --stale {stale!r}: must be a number of minutes above 0", file=sys.stderr)
        sys.exit(2)
    try:
        reap_command(tracking_uri(Path.cwd()), minutes)
    except TrackingError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)
