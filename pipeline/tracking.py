"""MLflow bookkeeping: where runs go, what each run records about its origin.

MLflow only records runs; DVC decides what runs. The store is `MLFLOW_TRACKING_URI` when set,
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
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

import pipeline
from pipeline.config import ACTIVATION_ARGS, PipelineError

# MLflow's asynchronous logging thread polls its queue once a second, so ending a run (or
# flushing) waited up to a second for it; with a buffering interval it waits on an event
# that ending the run sets at once. Metrics still reach the store within a second.
os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")

T = TypeVar("T")

EXPERIMENT = "mnist"
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


def experiment_id(root: Path) -> str:
    """Point MLflow at the store and return the `mnist` experiment's id, creating it once."""
    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)

    def get_or_create() -> str:
        client = mlflow.MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(EXPERIMENT, artifact_location=_artifact_location(uri))

    if not uri.startswith("sqlite:///"):
        return retrying(get_or_create)
    # MLflow creates a new SQLite store's tables with migrations that two processes must not
    # run at once (they leave it broken): the first to come creates it, the others wait.
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return retrying(get_or_create)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as flat `a.b` keys, as MLflow shows params."""

    def walk(node: Any, prefix: str) -> Iterator[tuple[str, Any]]:
        if isinstance(node, dict):
            for key, value in node.items():
                yield from walk(value, f"{prefix}{key}.")
        else:
            yield prefix[:-1], node

    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    # Of activation_args, only the chosen activation's own argument (if any) shaped the run.
    own = ACTIVATION_ARGS.get(cfg.activation.value)
    plain["activation_args"] = {own: plain["activation_args"][own]} if own else {}
    return {
        key: str(value) for key, value in walk(plain, "") if not key.startswith(_UNLOGGED_PARAMS)
    }


def run_name(cfg: DictConfig) -> str:
    """Says what ran, e.g. `mlp-relu-rmsprop-e5-b128`."""
    return (
        f"{cfg.model.name}-{cfg.activation.value}-{cfg.optimizer.name}"
        f"-e{cfg.epochs}-b{cfg.batch_size}"
    )


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
def active_run(root: Path, **start_run_args: Any) -> Iterator[Any]:
    """`mlflow.start_run` that also records why a run failed, as the tag `error`.

    A run stopped by an exception ends FAILED; one interrupted (SIGINT, SIGTERM) ends KILLED.
    """
    import mlflow

    exp_id = experiment_id(root)
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


class TrackingError(PipelineError):
    """A run could not be recorded."""


def log_to_run(
    root: Path,
    run: dict[str, str],
    metrics: dict[str, float],
    files: list[tuple[Path, str | None]],
) -> None:
    """Log `metrics`, and `files` as (path, artifact directory), into an existing run.

    Args:
        run: `run_id` and `run_name`, as the train stage leaves them in models/run.json.
    """
    import mlflow

    with active_run(root, run_id=run["run_id"], run_name=run["run_name"]):
        mlflow.log_metrics(metrics)
        for path, directory in files:
            mlflow.log_artifact(str(path), directory)


class RunLogger:
    """`log_to_run`, done by a process of its own that starts before the work it records.

    A process that has not imported MLflow (a `dvc repro` stage) would spend over a second on
    that import and on opening the store before it could log anything. A helper process does
    both on the other core while this one works, then logs what `log` sends it. Where MLflow
    is imported already, `log` logs in this process.

    Use it as a context manager: leaving it without calling `log` (the work failed) ends the
    helper without logging anything.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.helper: subprocess.Popen | None = None
        if "mlflow" not in sys.modules:
            # `_helper`, in a new Python running this very pipeline package.
            package_dir = str(Path(pipeline.__file__).resolve().parent.parent)
            path = os.pathsep.join(filter(None, [package_dir, os.environ.get("PYTHONPATH")]))
            self.helper = subprocess.Popen(
                [sys.executable, "-m", "pipeline.tracking", str(root)],
                stdin=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, "PYTHONPATH": path},
            )

    def log(
        self,
        run: dict[str, str],
        metrics: dict[str, float],
        files: list[tuple[Path, str | None]],
    ) -> None:
        """Log into `run` (see `log_to_run`) and wait until it is recorded.

        Raises:
            TrackingError: the helper could not record it (its reason, in one line).
        """
        if self.helper is None:
            return log_to_run(self.root, run, metrics, files)
        request = {"run": run, "metrics": metrics, "files": [[str(p), d] for p, d in files]}
        _, stderr = self.helper.communicate(json.dumps(request))
        if self.helper.returncode != 0:
            lines = stderr.strip().splitlines()
            raise TrackingError(lines[-1] if lines else f"exit status {self.helper.returncode}")

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.helper is not None and self.helper.poll() is None:
            self.helper.communicate("")  # no request: the helper ends without logging


def _helper(root: Path) -> None:
    """The process behind `RunLogger`: open the store, then log the request on stdin."""
    # Ctrl-C is for the process that started this one, which then closes stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        experiment_id(root)  # imports MLflow and opens (or creates) the store
        request = sys.stdin.read()
        if request:
            request = json.loads(request)
            files = [(Path(p), d) for p, d in request["files"]]
            log_to_run(root, request["run"], request["metrics"], files)
    except Exception as err:
        print(f"MLflow: {type(err).__name__}: {err}".splitlines()[0], file=sys.stderr)
        sys.exit(1)


def ui_link(root: Path, port: int = 5000) -> str:
    """The `mnist` runs table in MLflow's UI, in its Model training view (MLflow 3 opens on
    its GenAI overview otherwise, where training runs do not show)."""
    return (
        f"http://127.0.0.1:{port}/#/experiments/{experiment_id(root)}"
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


if __name__ == "__main__":
    _helper(Path(sys.argv[1]))
