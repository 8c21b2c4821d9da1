"""The active run: starting and ending it, what it records (params, metrics, datasets, tags,
artifacts, the job's outputs), its per-epoch history.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from pipeline.errors import TrackingError
from pipeline.paths import Paths
from pipeline.tracking.liveness import Heartbeat
from pipeline.tracking.models import log_model_file
from pipeline.tracking.store import (
    Store,
    configure_client,
    failure,
    mlflow_client,
    quick_answers,
    retrying,
    store_errors,
)

T = TypeVar("T")


def run_exists(uri: str, run_id: str) -> bool:
    """Whether the store at `uri` holds run `run_id`."""
    from mlflow.exceptions import MlflowException

    try:
        mlflow_client(uri).get_run(run_id)
    except MlflowException:
        return False
    return True


def recording(call: Callable[..., T]) -> Callable[..., T]:
    """A logging call whose store failure is a TrackingError (one line naming the store)."""

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        configure_client()
        try:
            return call(*args, **kwargs)
        except TrackingError:
            raise
        except store_errors() as err:
            raise failure(active_uri(), err, "lost") from None

    return wrapper


@contextmanager
def active_run(store: Store, **start_run_args: Any) -> Iterator[Any]:
    """`mlflow.start_run` in the checked `store`'s experiment, that also records why a run
    failed, as the tag `error`. A run stopped by an exception ends FAILED; one interrupted
    (SIGINT, SIGTERM) ends KILLED.

    Raises:
        TrackingError: the store failed, at the start or the end (any failure inside the
            block is re-raised as it was).
    """
    import mlflow

    configure_client()
    mlflow.set_tracking_uri(store.uri)
    run_id = start_run_args.get("run_id")
    if run_id and not run_exists(store.uri, run_id):
        # The model came from elsewhere (another store, `dvc pull`): record in a new run.
        print(f"MLflow run {run_id} is not in {store.uri}; starting a new run")
        start_run_args = {**start_run_args, "run_id": None, "tags": {"trained_in_run": run_id}}
    start = recording(retrying)
    run = start(mlflow.start_run, experiment_id=store.experiment_id, **start_run_args)
    _background.clear()  # a batch of an earlier run of this process is that run's
    try:
        # Where it runs and a beat while it does: `reap` ends it if its process vanishes.
        beat = recording(Heartbeat)(store.uri, run.info.run_id)
        try:
            yield run
        finally:
            beat.stop()
        _settle_background()
    except TrackingError:
        # The store failed: say nothing more to it than one quick attempt to close the run.
        with quick_answers(), contextlib.suppress(*store_errors()):
            mlflow.end_run("FAILED")
        raise
    except BaseException as err:
        killed = isinstance(err, KeyboardInterrupt)  # Ctrl-C, or SIGTERM (see pipeline.cli)
        with contextlib.suppress(*store_errors()):
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            mlflow.end_run("KILLED" if killed else "FAILED")
        if mlflow.active_run() is not None:  # the store failed as well: let the run go
            with quick_answers(), contextlib.suppress(*store_errors()):
                mlflow.end_run("FAILED")
        raise
    recording(mlflow.end_run)()


def log_to_run(
    store: Store,
    run: dict[str, str],
    metrics: dict[str, float],
    files: list[tuple[Path, str | None]],
) -> None:
    """Log `metrics`, and `files` as (path, artifact directory), into an existing run.

    Args:
        run: `run_id` and `run_name`, as the train stage leaves them in models/run.json.
    """

    with active_run(store, run_id=run["run_id"], run_name=run["run_name"]):
        log_metrics(metrics)
        for path, directory in files:
            log_artifact(path, directory)


def epoch_history(run_id: str) -> dict[str, list[float]]:
    """The run's per-epoch metrics (`epoch/...`), by name without the prefix, in epoch order.

    Where an epoch was logged twice (retrained after an interruption), the later value counts.
    """
    import mlflow

    configure_client()
    mlflow.flush_async_logging()
    client = mlflow.MlflowClient()
    history = {}
    for key in sorted(client.get_run(run_id).data.metrics):
        if key.startswith("epoch/"):
            by_step = {}
            for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
                by_step[m.step] = m.value
            history[key.removeprefix("epoch/")] = [by_step[s] for s in sorted(by_step)]
    return history


# The active run's records (inside `active_run`). A store that fails raises TrackingError.


@recording
def log_params(params: dict[str, Any]) -> None:
    import mlflow

    retrying(mlflow.log_params, params)


# Metrics logged in the background (`log_metrics(wait=False)`) in the active run, with what
# each batch held, until the run's end settles them (`_settle_background`).
_background: list[tuple[Any, dict[str, float], int | None]] = []


@recording
def log_metrics(metrics: dict[str, float], step: int | None = None, wait: bool = True) -> None:
    """Log into the active run; with `wait=False` in the background, so that the store's
    latency never stalls training (the run's end checks that each batch was recorded)."""
    import mlflow

    if wait:
        retrying(mlflow.log_metrics, metrics, step=step)
    else:
        _background.append((mlflow.log_metrics(metrics, step=step, synchronous=False),
                            metrics, step))  # fmt: skip


@recording
def _settle_background() -> None:
    """Wait for the metrics logged in the background, and log again, in the foreground, each
    batch the store refused (MLflow's logging thread only says so in its log): a run never
    ends with an epoch silently missing. A store that still refuses raises its error."""
    import mlflow

    if _background:
        mlflow.flush_async_logging()  # now, not at the logging thread's next interval
    batches = _background.copy()
    _background.clear()
    for operations, metrics, step in batches:
        try:
            operations.wait()
        except Exception:
            log_metrics(metrics, step=step)
            print(f"MLflow: the metrics of step {step}, refused in the background, are logged",
                  file=sys.stderr)  # fmt: skip


@recording
def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    retrying(mlflow.set_tags, tags)


@recording
def log_artifact(path: Path, directory: str | None = None) -> None:
    import mlflow

    retrying(mlflow.log_artifact, str(path), directory)


@recording
def log_text(text: str, name: str) -> None:
    import mlflow

    retrying(mlflow.log_text, text, name)


@recording
def log_datasets(source: str, splits: list[list]) -> None:
    """Record the data the active run used as MLflow dataset inputs (the runs table's Dataset
    column): each split's name, a digest of its content, where it came from, its shape.

    Args:
        source: Where the data was downloaded from (a URL or a path).
        splits: `[name, context, digest, features_shape, targets_shape]` each: context
            `training`, `validation` or `test`; the digest identifies the content (computed
            once by the caller); the shapes are of the float32 arrays, rows first.
    """
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types import Schema, TensorSpec

    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice, then warns that a local path
        # "can be interpreted in multiple ways" (both are the same class).
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        resolved = resolve_dataset_source(source)
    datasets, contexts, tags = [], [], []
    for name, context, digest, x_shape, y_shape in splits:
        schema = Schema(
            [TensorSpec(np.dtype(np.float32), (-1, *x_shape[1:]), "features"),
             TensorSpec(np.dtype(np.float32), (-1, *y_shape[1:]), "targets")]
        )  # fmt: skip
        datasets.append(MetaDataset(resolved, name=name, digest=digest, schema=schema))
        contexts.append(context)
        tags.append({"rows": str(x_shape[0])})
    retrying(mlflow.log_inputs, datasets, contexts, tags)


def active_uri() -> str:
    """The store the active (or last) run went to."""
    import mlflow

    return mlflow.get_tracking_uri()


# A job's files, as the train and evaluate steps leave them in its directory, logged into its
# run: at the end of every run, and later for a run whose store failed (`log_job`).


def per_class_key(index: int) -> str:
    """The metric name of class `index`'s test accuracy (by index: class names may hold
    characters metric keys may not, `T-shirt/top`)."""
    return f"test_accuracy_class_{index}"


@recording
def log_outputs(paths: Paths, record: dict[str, Any]) -> None:
    """Log what training left in the job directory into the active run: the fit metrics,
    learning curves and history, config, model summary, and the model (MLflow's format)."""

    log_metrics(record["metrics"])
    log_artifact(paths.learning_curves, "plots")
    log_artifact(paths.history)
    log_text(record["config"], "config.yaml")
    log_text(record["model_summary"], "model_summary.txt")
    # One attempt: a second would log a second model.
    log_model_file(paths.model, record["model"])


def evaluation_files(paths: Paths, tested: bool = True) -> list[tuple[Path, str | None]]:
    """The evaluate step's reports as (file, artifact directory); without `tested` (a
    search's trial, which reads no test set) only the metrics."""
    if not tested:
        return [(paths.metrics, None)]
    return [(paths.metrics, None), (paths.per_class, None), (paths.confusion, None),
            (paths.confusion_plot, "plots"), (paths.misclassified_plot, "plots")]  # fmt: skip
