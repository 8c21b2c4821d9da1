"""Every MLflow call of the project: where runs go, what each run records, reading runs back.

The only module that imports mlflow (a test checks), always inside its functions, so that
modules which only name a run start without it. MLflow only records runs; DVC decides what
runs. The store is `MLFLOW_TRACKING_URI` when set,
otherwise `mlflow.db` (SQLite) at the project root with artifacts in `mlruns/` beside it, both
addressed by absolute path, so runs that `dvc exp run --queue` starts in temporary copies of
the project land in the project's own store.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline.activations import describe, own_args
from pipeline.errors import TrackingError

# MLflow's asynchronous logging thread polls its queue once a second, so ending a run (or
# flushing) waited up to a second for it; with a buffering interval it waits on an event
# that ending the run sets at once. Metrics still reach the store within a second.
os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")

T = TypeVar("T")

# Runs go to the experiment `tracking.experiment` names: by default the dataset's name. This is
# the default dataset's, which `compare` and `make ui` show unless told another.
DEFAULT_EXPERIMENT = "mnist"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
# DVC runs queued experiments in copies of the project under this directory.
_DVC_EXP_COPIES = (".dvc", "tmp", "exps")
# Keys that do not shape a run's result: the download's checksums (the data hash tag covers
# the data) and whether an interrupted run was resumed (its params must not change).
_UNLOGGED_PARAMS = ("data.idx_sha256", "data.npz_sha256", "train.resume")


def store_root(root: Path) -> Path:
    """The project that owns the tracking store: for a DVC queue copy, the original project."""
    parts = root.resolve().parts
    for i in range(len(parts) - len(_DVC_EXP_COPIES)):
        if parts[i : i + len(_DVC_EXP_COPIES)] == _DVC_EXP_COPIES:
            return Path(*parts[:i])
    return root.resolve()


def tracking_uri(root: Path) -> str:
    """`MLFLOW_TRACKING_URI` if set, else the project's SQLite store as an absolute URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{store_root(root) / STORE_FILE}"


def _artifact_location(uri: str) -> str | None:
    """For a SQLite store, artifacts go to `mlruns/` beside the database file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS_DIR).as_uri()
    return None  # a tracking server decides for itself


# What a store says while another process holds a lock on it (SQLite), or created the same
# experiment a moment before (SQLite; PostgreSQL says "duplicate key value violates unique
# constraint"): lower case, compared with the lower-cased message.
_TRANSIENT = ("database is locked", "unique constraint")


def retrying(call: Callable[..., T], *args: Any, attempts: int = 6, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, retried with backoff while the store is busy elsewhere.

    Parallel jobs share one SQLite file: SQLite waits for a lock only so long, and two
    processes that find no store both try to create it. Other errors are raised at once.
    """
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not any(t in str(err).lower() for t in _TRANSIENT):
                raise
            time.sleep(0.25 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


def experiment_id(root: Path, name: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the store and return experiment `name`'s id, creating it once."""
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)

    def get_or_create() -> str:
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=_artifact_location(uri))

    try:
        if not uri.startswith("sqlite:///"):
            return retrying(get_or_create)
        # MLflow creates a new SQLite store's tables with migrations that two processes must
        # not run at once (they leave it broken): the first to come creates it, the others
        # wait.
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                return retrying(get_or_create)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except Exception as err:  # whatever the store's driver raised: said in one line
        reason = f"{type(err).__name__}: {err}".splitlines()[0]
        raise TrackingError(f"MLflow: cannot use the tracking store {uri}: {reason}") from None


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b` keys, as MLflow shows params."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # Of activation_args, only the chosen activation's own arguments (if any) shaped the run.
    plain["activation_args"] = own_args(cfg.activation.value, plain["activation_args"])
    return {
        key: str(value) for key, value in walk(plain, "") if not key.startswith(_UNLOGGED_PARAMS)
    }


def run_name(cfg: DictConfig) -> str:
    """Says what ran, e.g. `mlp-relu-rmsprop-e5-b128`, `mlp-elu(alpha=0.5)-adam-e5-b128`, and
    on a dataset other than MNIST which: `fashion_mnist-mlp-relu-rmsprop-e5-b128`."""
    activation = describe(cfg.activation.value, cfg.activation_args)
    name = f"{cfg.model.name}-{activation}-{cfg.optimizer.name}-e{cfg.epochs}-b{cfg.batch_size}"
    return name if cfg.data.name == DEFAULT_EXPERIMENT else f"{cfg.data.name}-{name}"


# dvc_dir_md5's results by the files' identity (path, size, mtime, inode): the jobs of a
# sweep share one process and one prepared directory, which need hashing only once.
_dir_md5s: dict[tuple, str] = {}


def dvc_dir_md5(path: Path) -> str:
    """The hash DVC gives a directory output (md5 of its sorted file list), e.g. `ab12...dir`."""
    files = sorted(p for p in path.rglob("*") if p.is_file())
    identity = tuple((f, s.st_size, s.st_mtime_ns, s.st_ino) for f in files for s in [f.stat()])
    if identity not in _dir_md5s:
        _dir_md5s[identity] = _hash_dir(path, files)
    return _dir_md5s[identity]


def _hash_dir(path: Path, files: list[Path]) -> str:
    entries = []
    for file in files:
        digest = hashlib.md5()
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        entries.append({"md5": digest.hexdigest(), "relpath": file.relative_to(path).as_posix()})
    listing = json.dumps(entries, sort_keys=True).encode()
    return hashlib.md5(listing).hexdigest() + ".dir"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_tags(root: Path, prepared: Path, entry_point: str) -> dict[str, str]:
    """Where a run came from: code version, data version, how it was started."""
    tags = {
        "entry_point": entry_point,
        "git_commit": _git(root, "rev-parse", "HEAD") or "unknown",
        "dvc_data_md5": dvc_dir_md5(prepared),
    }
    dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    if dirty is not None:
        tags["git_dirty"] = str(bool(dirty)).lower()
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    return tags


def _run_exists(run_id: str) -> bool:
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return True


@contextmanager
def active_run(root: Path, experiment: str, **start_run_args: Any) -> Iterator[Any]:
    """`mlflow.start_run` in `experiment` that also records why a run failed, as the tag
    `error`. A run stopped by an exception ends FAILED; one interrupted (SIGINT, SIGTERM)
    ends KILLED.
    """
    import mlflow

    exp_id = experiment_id(root, experiment)
    run_id = start_run_args.get("run_id")
    if run_id and not _run_exists(run_id):
        # The model came from elsewhere (another store, `dvc pull`): record in a new run.
        print(f"MLflow run {run_id} is not in {tracking_uri(root)}; starting a new run")
        start_run_args = {**start_run_args, "run_id": None, "tags": {"trained_in_run": run_id}}
    with retrying(mlflow.start_run, experiment_id=exp_id, **start_run_args) as run:
        try:
            yield run
        except BaseException as err:
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            if isinstance(err, KeyboardInterrupt):  # Ctrl-C, or SIGTERM (see pipeline.cli)
                mlflow.end_run("KILLED")
            raise


def log_to_run(
    root: Path,
    experiment: str,
    run: dict[str, str],
    metrics: dict[str, float],
    files: list[tuple[Path, str | None]],
) -> None:
    """Log `metrics`, and `files` as (path, artifact directory), into an existing run.

    Args:
        run: `run_id` and `run_name`, as the train stage leaves them in models/run.json.
    """
    import mlflow

    with active_run(root, experiment, run_id=run["run_id"], run_name=run["run_name"]):
        mlflow.log_metrics(metrics)
        for path, directory in files:
            mlflow.log_artifact(str(path), directory)


def ui_link(root: Path, port: int = 5000, experiment: str = DEFAULT_EXPERIMENT) -> str:
    """An experiment's runs table in MLflow's UI, in its Model training view (MLflow 3 opens
    on its GenAI overview otherwise, where training runs do not show)."""
    return (
        f"http://127.0.0.1:{port}/#/experiments/{experiment_id(root, experiment)}"
        "/runs?workflowType=machine_learning"
    )


def epoch_history(run_id: str) -> dict[str, list[float]]:
    """The run's per-epoch metrics (`epoch/...`), by name without the prefix, in epoch order.

    Where an epoch was logged twice (retrained after an interruption), the later value counts.
    """
    import mlflow

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


# The active run's records (inside `active_run`).


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params(params)


def log_metrics(metrics: dict[str, float], step: int | None = None, wait: bool = True) -> None:
    """Log into the active run; with `wait=False` in the background, so that the store's
    latency never stalls training (ending the run waits for them)."""
    import mlflow

    mlflow.log_metrics(metrics, step=step, synchronous=wait)


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


def log_artifact(path: Path, directory: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), directory)


def log_text(text: str, name: str) -> None:
    import mlflow

    mlflow.log_text(text, name)


def log_keras_model(model: Any, example: np.ndarray, pip_requirements: list[str]) -> None:
    """Log the model in MLflow's format, with its signature and an input example, so that
    `mlflow models predict -m runs:/<run id>/model` can score it."""
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # What MLflow's infer_signature gives for the model's input and output arrays, without
    # compiling a prediction function to find out.
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, *model.input_shape[1:]))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        # mlflow.keras.log_model fails when given an input example (mlflow issue 16183):
        # saving into an existing directory, then logging it, gives the same artifacts.
        path.mkdir()
        mlflow.keras.save_model(
            model,
            str(path),
            signature=signature,
            input_example=np.asarray(example),
            pip_requirements=pip_requirements,
        )
        mlflow.log_artifacts(str(path), "model")


def log_datasets(source: str, splits: list[tuple[str, str, str, tuple, tuple]]) -> None:
    """Record the data the active run used as MLflow dataset inputs (the runs table's Dataset
    column): each split's name, a digest of its content, where it came from, its shape.

    Args:
        source: Where the data was downloaded from (a URL or a path).
        splits: `(name, context, digest, features_shape, targets_shape)` each: context
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
    mlflow.log_inputs(datasets, contexts, tags)


def active_uri() -> str:
    """The store the active (or last) run went to."""
    import mlflow

    return mlflow.get_tracking_uri()


# Runs by id: sweeps' parent runs, reports.


def _client(root: Path) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri(root))


def create_run(root: Path, experiment: str, run_name: str, tags: dict[str, str]) -> str:
    """A new run in `experiment`, left open (a sweep's parent); its id."""
    exp_id = experiment_id(root, experiment)  # first: it creates the store safely
    run = retrying(_client(root).create_run, exp_id, run_name=run_name, tags=tags)
    return run.info.run_id


def child_runs(root: Path, parent_id: str) -> list[Any]:
    """The runs tagged as children of `parent_id` (a sweep's jobs), in any experiment: jobs
    on other datasets log to their dataset's."""
    client = _client(root)
    experiments = [e.experiment_id for e in client.search_experiments()]
    children = f"tags.mlflow.parentRunId = '{parent_id}'"
    return client.search_runs(experiments, filter_string=children, max_results=10000)


def log_artifacts_to(root: Path, run_id: str, paths: list[Path], directory: str) -> None:
    client = _client(root)
    for path in paths:
        client.log_artifact(run_id, str(path), directory)


def end_run(root: Path, run_id: str, status: str, tags: dict[str, str]) -> None:
    """Tag and close a run opened by `create_run`, with `status` (FINISHED, FAILED, KILLED)."""
    client = _client(root)
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status)


def search_runs(
    root: Path, experiment: str, filter_string: str, order_by: list[str], max_results: int
) -> list[Any] | None:
    """The experiment's runs matching `filter_string`; None when there is no such experiment.

    Raises:
        ValueError: MLflow refused the filter (its reason, one line).
    """
    from mlflow.exceptions import MlflowException

    client = _client(root)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    try:
        return list(
            client.search_runs(
                [found.experiment_id],
                filter_string=filter_string,
                order_by=order_by,
                max_results=max_results,
            )
        )
    except MlflowException as err:
        raise ValueError(err.message.splitlines()[0]) from None


def metric_history(root: Path, run_id: str, key: str) -> list[float]:
    """A metric's values in step order (a per-epoch curve)."""
    history = _client(root).get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]
