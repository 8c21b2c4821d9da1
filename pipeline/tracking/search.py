"""Runs by id and runs read back: sweeps' parent runs, reports, the UI's link.

Each takes the store: its URI (`tracking_uri`, found once by the command's entry point), or
for `create_run` the checked `Store`; each uses a client of that store, not MLflow's
process-wide tracking URI.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipeline.tracking.store import (
    DEFAULT_EXPERIMENT,
    Store,
    experiment_id,
    mlflow_client,
    retrying,
)


def create_run(store: Store, run_name: str, tags: dict[str, str]) -> str:
    """A new run in the checked `store`'s experiment (`connect`), left open (a sweep's
    parent); its id."""
    client = mlflow_client(store.uri)
    run = retrying(client.create_run, store.experiment_id, run_name=run_name, tags=tags)
    return run.info.run_id


def child_runs(uri: str, parent_id: str) -> list[Any]:
    """The runs tagged as children of `parent_id` (a sweep's jobs), in any experiment: jobs
    on other datasets log to their dataset's."""
    client = mlflow_client(uri)
    experiments = [e.experiment_id for e in retrying(client.search_experiments)]
    children = f"tags.mlflow.parentRunId = '{parent_id}'"
    return retrying(client.search_runs, experiments, filter_string=children, max_results=10000)


def runs_tagged(uri: str, tags: dict[str, str]) -> list[Any]:
    """The runs holding all of `tags`, in any experiment, the newest first."""
    client = mlflow_client(uri)
    experiments = [e.experiment_id for e in retrying(client.search_experiments)]
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return retrying(
        client.search_runs, experiments, filter_string=clauses, order_by=["start_time DESC"]
    )


def log_artifacts_to(uri: str, run_id: str, paths: list[Path], directory: str) -> None:
    client = mlflow_client(uri)
    for path in paths:
        client.log_artifact(run_id, str(path), directory)


def download_artifact(uri: str, run_id: str, path: str, dst: Path) -> Path:
    """The run's artifact `path` (such as `compare/selection.md`), copied under `dst`."""
    dst.mkdir(parents=True, exist_ok=True)
    return Path(retrying(mlflow_client(uri).download_artifacts, run_id, path, str(dst)))


def end_run(uri: str, run_id: str, status: str, tags: dict[str, str]) -> None:
    """Tag and close a run opened by `create_run`, with `status` (FINISHED, FAILED, KILLED)."""
    client = mlflow_client(uri)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status)


def record_on_run(
    uri: str,
    run_id: str,
    params: dict[str, str] | None = None,
    metrics: dict[str, float] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Log params, metrics and tags into an existing run (a sweep's parent, its children)."""
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow_client(uri)
    now = int(time.time() * 1000)
    retrying(
        client.log_batch,
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def search_runs(
    uri: str, experiment: str, filter_string: str, order_by: list[str], max_results: int
) -> list[Any] | None:
    """The experiment's runs matching `filter_string`; None when there is no such experiment.

    Raises:
        ValueError: MLflow refused the filter (its reason, one line).
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    found = retrying(client.get_experiment_by_name, experiment)
    if found is None:
        return None
    try:
        return list(
            retrying(
                client.search_runs,
                [found.experiment_id],
                filter_string=filter_string,
                order_by=order_by,
                max_results=max_results,
            )
        )
    except MlflowException as err:
        raise ValueError(err.message.splitlines()[0]) from None


def metric_history(uri: str, run_id: str, key: str) -> list[float]:
    """A metric's values in step order (a per-epoch curve)."""
    history = retrying(mlflow_client(uri).get_metric_history, run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


def ui_link(uri: str, port: int = 5000, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """An experiment's runs table in MLflow's UI, in its Model training view (MLflow 3 opens
    on its GenAI overview otherwise, where training runs do not show)."""
    return (
        f"http://127.0.0.1:{port}/#/experiments/{experiment_id(uri, experiment)}"
        "/runs?workflowType=machine_learning"
    )
