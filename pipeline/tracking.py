"""Every MLflow call of the project: where runs go, what each run records, reading runs back.

The only module that imports mlflow (a test checks), always inside its functions, so that
modules which only name a run start without it. MLflow only records runs; DVC decides what
runs. The store is `MLFLOW_TRACKING_URI` when set,
otherwise `mlflow.db` (SQLite) at the project root with artifacts in `mlruns/` beside it, both
addressed by absolute path, so runs that `dvc exp run --queue` starts in temporary copies of
the project land in the project's own store.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import functools
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
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
from pipeline.paths import Paths

# MLflow's asynchronous logging thread polls its queue once a second, so ending a run (or
# flushing) waited up to a second for it; with a buffering interval it waits on an event
# that ending the run sets at once. Metrics still reach the store within a second.
os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
# MLflow retries a request to a tracking server for about four minutes by default (252 s
# measured against a server that was down). During a run a few retries ride out a restart;
# a store that stays down ends the run's logging, and its files stay in its job directory.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
# For the check before a run, and for giving up on a store that already failed: no retry,
# and an answer within seconds.
_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}

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


# What a store says while another process holds a lock on it (SQLite), or added the same
# experiment or dataset a moment before (MLflow looks for one, then adds it: two runs that
# record the same new dataset at once both add it; SQLite says "UNIQUE constraint failed",
# PostgreSQL "duplicate key value violates unique constraint"): lower case, compared with the
# lower-cased message. Each call retried is one write that the store makes whole or not at all.
_TRANSIENT = ("database is locked", "unique constraint")


def _transient(err: BaseException) -> bool:
    return any(t in str(err).lower() for t in _TRANSIENT)


def retrying(call: Callable[..., T], *args: Any, attempts: int = 6, **kwargs: Any) -> T:
    """`call(*args, **kwargs)`, retried with backoff while the store is busy elsewhere.

    Parallel jobs share one SQLite file: SQLite waits for a lock only so long, and two
    processes that find no store (or no record of a dataset) both try to create it. Other
    errors are raised at once.
    """
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as err:
            if attempt == attempts - 1 or not _transient(err):
                raise
            time.sleep(0.25 * 2**attempt * (1 + random.random()))
    raise AssertionError("unreachable")


@contextmanager
def _quick_answers() -> Iterator[None]:
    """MLflow's HTTP requests inside the block: one attempt, five seconds."""
    saved = {key: os.environ.get(key) for key in _QUICK}
    os.environ.update(_QUICK)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _failure(uri: str, err: BaseException, when: str = "cannot use") -> TrackingError:
    """What went wrong with the store, in one line naming it."""
    text = str(err)
    # SQLAlchemy puts a line about its session before the database's own error.
    lines = [line for line in text.splitlines() if "Query-invoked autoflush" not in line]
    reason = f"{type(err).__name__}: {lines[0] if lines else ''}"
    if "NameResolutionError" in text or "Name or service not known" in text:
        reason = "no such host (its name does not resolve)"
    elif "Connection refused" in text or "Failed to establish a new connection" in text:
        reason = "nothing answers there (connection refused)"
    elif "timed out" in text.lower() or "Timeout" in text:
        reason = "no answer within the time allowed (MLFLOW_HTTP_REQUEST_TIMEOUT)"
    elif "404" in text or "ENDPOINT_NOT_FOUND" in text or "JSONDecodeError" in text:
        reason = f"it does not answer as an MLflow tracking server ({reason[:160]})"
    return TrackingError(f"MLflow: {when} the tracking store {uri}: {reason[:300]}")


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a store's failure raises: MLflow's exception (REST and SQL stores wrap theirs in
    it), and the file system's."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


def experiment_id(root: Path, name: str = DEFAULT_EXPERIMENT) -> str:
    """Point MLflow at the store and return experiment `name`'s id, creating it once.

    This is the check before any work: a store that is unreachable, refuses, or is not an
    MLflow server fails here in one line, within seconds.

    Raises:
        TrackingError: the store cannot be used (its URI and the cause).
    """
    return _experiment_id(tracking_uri(root), name)


def _experiment_id(uri: str, name: str) -> str:
    import mlflow

    mlflow.set_tracking_uri(uri)

    def get_or_create() -> str:
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=_artifact_location(uri))

    try:
        if not uri.startswith("sqlite:///"):
            with _quick_answers():
                return retrying(get_or_create)
        # MLflow creates a new SQLite store's tables with migrations that two processes must
        # not run at once (they leave it broken): the first to come creates it, the others
        # wait.
        database = Path(uri.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with open(database.with_name(database.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                _write_ahead_log(database)
                return retrying(get_or_create)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
    except Exception as err:  # whatever the store's driver raised: said in one line
        raise _failure(uri, err) from None


def _write_ahead_log(database: Path) -> None:
    """Put a SQLite store in write-ahead-log mode (once; the file keeps it): then readers
    (`pipeline.compare`, `mlflow ui`) and the one writer of the moment never wait for each
    other, where SQLite's default journal made a reader fail with "database is locked" while a
    sweep's jobs wrote, and a writer while a reader read."""
    connection = sqlite3.connect(database, timeout=5)
    try:
        if connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            connection.execute("PRAGMA journal_mode=WAL")
    except sqlite3.OperationalError:
        pass  # busy elsewhere (a switch needs the file to itself): the next run switches it
    finally:
        connection.close()


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


def _recording(call: Callable[..., T]) -> Callable[..., T]:
    """A logging call whose store failure is a TrackingError (one line naming the store)."""

    @functools.wraps(call)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return call(*args, **kwargs)
        except TrackingError:
            raise
        except _store_errors() as err:
            raise _failure(active_uri(), err, "lost") from None

    return wrapper


@contextmanager
def active_run(root: Path, experiment: str, **start_run_args: Any) -> Iterator[Any]:
    """`mlflow.start_run` in `experiment`, after checking the store (`experiment_id`), that
    also records why a run failed, as the tag `error`. A run stopped by an exception ends
    FAILED; one interrupted (SIGINT, SIGTERM) ends KILLED.

    Raises:
        TrackingError: the store failed, at the start or the end (any failure inside the
            block is re-raised as it was).
    """
    import mlflow

    exp_id = experiment_id(root, experiment)
    run_id = start_run_args.get("run_id")
    if run_id and not _run_exists(run_id):
        # The model came from elsewhere (another store, `dvc pull`): record in a new run.
        print(f"MLflow run {run_id} is not in {tracking_uri(root)}; starting a new run")
        start_run_args = {**start_run_args, "run_id": None, "tags": {"trained_in_run": run_id}}
    run = _recording(retrying)(mlflow.start_run, experiment_id=exp_id, **start_run_args)
    _background.clear()  # a batch of an earlier run of this process is that run's
    try:
        yield run
        _settle_background()
    except TrackingError:
        # The store failed: say nothing more to it than one quick attempt to close the run.
        with _quick_answers(), contextlib.suppress(*_store_errors()):
            mlflow.end_run("FAILED")
        raise
    except BaseException as err:
        killed = isinstance(err, KeyboardInterrupt)  # Ctrl-C, or SIGTERM (see pipeline.cli)
        with contextlib.suppress(*_store_errors()):
            mlflow.set_tag("error", f"{type(err).__name__}: {err}"[:5000])
            mlflow.end_run("KILLED" if killed else "FAILED")
        if mlflow.active_run() is not None:  # the store failed as well: let the run go
            with _quick_answers(), contextlib.suppress(*_store_errors()):
                mlflow.end_run("FAILED")
        raise
    _recording(mlflow.end_run)()


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

    with active_run(root, experiment, run_id=run["run_id"], run_name=run["run_name"]):
        log_metrics(metrics)
        for path, directory in files:
            log_artifact(path, directory)


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


# The active run's records (inside `active_run`). A store that fails raises TrackingError.


@_recording
def log_params(params: dict[str, Any]) -> None:
    import mlflow

    retrying(mlflow.log_params, params)


# Metrics logged in the background (`log_metrics(wait=False)`) in the active run, with what
# each batch held, until the run's end settles them (`_settle_background`).
_background: list[tuple[Any, dict[str, float], int | None]] = []


@_recording
def log_metrics(metrics: dict[str, float], step: int | None = None, wait: bool = True) -> None:
    """Log into the active run; with `wait=False` in the background, so that the store's
    latency never stalls training (the run's end checks that each batch was recorded)."""
    import mlflow

    if wait:
        retrying(mlflow.log_metrics, metrics, step=step)
    else:
        _background.append((mlflow.log_metrics(metrics, step=step, synchronous=False),
                            metrics, step))  # fmt: skip


@_recording
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


@_recording
def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    retrying(mlflow.set_tags, tags)


@_recording
def log_artifact(path: Path, directory: str | None = None) -> None:
    import mlflow

    retrying(mlflow.log_artifact, str(path), directory)


@_recording
def log_text(text: str, name: str) -> None:
    import mlflow

    retrying(mlflow.log_text, text, name)


@_recording
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


@_recording
def log_outputs(paths: Paths, record: dict[str, Any]) -> None:
    """Log what training left in the job directory into the active run: the fit metrics,
    learning curves and history, config, model summary, and the model (MLflow's format)."""

    log_metrics(record["metrics"])
    log_artifact(paths.learning_curves, "plots")
    log_artifact(paths.history)
    log_text(record["config"], "config.yaml")
    log_text(record["model_summary"], "model_summary.txt")
    # One attempt: a second would log a second model.
    _log_model(paths.model, record["model"])


# The project's package, shipped with each logged model (MLflow's `code_paths`): the model's
# custom layers and its loader (pipeline.models.serving) come from it wherever it is loaded.
PACKAGE = Path(__file__).resolve().parent


def _log_model(model_file: Path, about: dict[str, Any]) -> None:
    """Log the saved model as the run's MLflow model `model` (MLflow 3: a logged model, in the
    Models tab and the runs table's Models column), in MLflow's `python_function` flavor with
    its own loader and code, a signature and an input example: it loads with
    `mlflow.pyfunc.load_model`, `mlflow models predict` and `mlflow models serve` anywhere.

    Args:
        about: `pixels` and `classes` (the signature), `example` (a few prepared images as
            uint8 pixels), `requirements` (pip), and `dataset`, `class_names`, `image_shape`
            (kept as the model's metadata, for `pipeline.predict`).
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, about["pixels"]))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, about["classes"]))]),
    )
    example = np.asarray(about["example"], np.float32) / np.float32(255)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        shutil.copy(model_file, data / "model.keras")  # pipeline.models.serving.MODEL_FILE
        mlflow.pyfunc.log_model(
            name="model",
            loader_module="pipeline.models.serving",
            data_path=str(data),
            code_paths=[str(PACKAGE)],
            signature=signature,
            input_example=example,
            pip_requirements=about["requirements"],
            metadata={k: about[k] for k in ("dataset", "class_names", "image_shape")},
        )


def evaluation_files(paths: Paths) -> list[tuple[Path, str | None]]:
    """The evaluate step's reports as (file, artifact directory)."""
    return [(paths.metrics, None), (paths.per_class, None), (paths.confusion, None),
            (paths.confusion_plot, "plots"), (paths.misclassified_plot, "plots")]  # fmt: skip


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
    exp_id = _experiment_id(uri, record["experiment"])
    known = _run_exists(record["run_id"])
    run_args = {"run_id": record["run_id"]} if known else {
        "experiment_id": exp_id, "run_name": record["run_name"],
        "tags": {**record["tags"], "logged_from": str(out)},
    }  # fmt: skip
    with _recording(retrying)(mlflow.start_run, **run_args) as run:
        client = mlflow.MlflowClient()
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


# The model registry: registering a run's logged model, finding and loading models.

CHAMPION = "champion"


def _registry_failure(err: BaseException) -> TrackingError:
    return TrackingError(f"MLflow: {str(err).splitlines()[0]}")


def run_model(root: Path, run_id: str) -> tuple[Any, str]:
    """A run and the id of the model it logged.

    Raises:
        TrackingError: no such run in the store, or the run logged no model.
    """
    from mlflow.exceptions import MlflowException

    client = _client(root)
    try:
        run = retrying(client.get_run, run_id)
    except MlflowException:
        raise TrackingError(f"no run {run_id} in {tracking_uri(root)}") from None
    models = retrying(
        client.search_logged_models,
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
    )
    models = [m for m in models if m.name == "model"]
    if not models:
        raise TrackingError(f"run {run_id} ({run.info.run_name}) logged no model to register")
    return run, models[-1].model_id


def register(root: Path, run_id: str, name: str, alias: str = CHAMPION) -> int:
    """Register the model run `run_id` logged as a new version of `name`, and point `alias`
    at it. Returns the version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment_id(root, DEFAULT_EXPERIMENT)  # the store answers (checked in seconds)
    _, model_id = run_model(root, run_id)
    client = _client(root)
    try:
        version = mlflow.register_model(f"models:/{model_id}", name)
        retrying(client.set_registered_model_alias, name, alias, version.version)
    except MlflowException as err:
        raise _registry_failure(err) from None
    return int(version.version)


def alias_uri(root: Path, name: str, alias: str = CHAMPION) -> str | None:
    """`models:/<name>@<alias>` if the registry has that alias, else None."""
    from mlflow.exceptions import MlflowException

    experiment_id(root, DEFAULT_EXPERIMENT)  # the store answers (checked in seconds)
    try:
        _client(root).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return f"models:/{name}@{alias}"


def load_model(root: Path, uri: str) -> tuple[Any, dict[str, Any]]:
    """An MLflow model (`models:/...`, `runs:/...`) as `python_function`: its `predict`, and
    the metadata it was logged with."""
    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow.set_tracking_uri(tracking_uri(root))
    try:
        model = mlflow.pyfunc.load_model(uri)
    except (MlflowException, OSError) as err:
        raise TrackingError(f"cannot load {uri}: {str(err).splitlines()[0]}") from None
    return model.predict, dict(model.metadata.metadata or {})


def main(argv: list[str] | None = None) -> None:
    """`python -m pipeline.tracking log <job dir> ...`: log finished jobs into MLflow."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    log = commands.add_parser("log", help="log finished jobs whose store failed during the run")
    log.add_argument("job_dirs", nargs="+", type=Path, help="a run's job directory")
    args = parser.parse_args(argv)
    failed = 0
    for job_dir in args.job_dirs:
        try:
            log_job(job_dir.resolve())
        except TrackingError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
    sys.exit(1 if failed else 0)


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
    experiments = [e.experiment_id for e in retrying(client.search_experiments)]
    children = f"tags.mlflow.parentRunId = '{parent_id}'"
    return retrying(client.search_runs, experiments, filter_string=children, max_results=10000)


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


def metric_history(root: Path, run_id: str, key: str) -> list[float]:
    """A metric's values in step order (a per-epoch curve)."""
    history = retrying(_client(root).get_metric_history, run_id, key)
    return [m.value for m in sorted(history, key=lambda m: m.step)]


if __name__ == "__main__":
    main()
