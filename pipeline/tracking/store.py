"""Where runs go, and the check before any work: the store's URI, retries while it is busy,
quick answers from one that failed, one-line failures, SQLite's write-ahead log.
"""

from __future__ import annotations

import fcntl
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pipeline.errors import TrackingError

# For the check before a run, and for giving up on a store that already failed: no retry,
# and an answer within seconds.
_QUICK = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def configure_client() -> None:
    """MLflow's client settings for the pipeline, unless the environment sets them already.

    Called where work with a store starts, not at import: importing changes no environment.
    """
    # With a buffering interval, ending a run wakes MLflow's logging thread at once instead of
    # waiting for its next poll; metrics still reach the store within a second.
    os.environ.setdefault("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", "1")
    # MLflow's default retries wait minutes for a server that is down; a few ride out a
    # restart, and a store that stays down leaves the run's files in its job directory.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


T = TypeVar("T")

# Runs go to the experiment `tracking.experiment` names: by default the dataset's name. This is
# the default dataset's, which `compare` and `make ui` show unless told another.
DEFAULT_EXPERIMENT = "mnist"
STORE_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlruns"
# DVC runs queued experiments in copies of the project under this directory.
_DVC_EXP_COPIES = (".dvc", "tmp", "exps")


def mlflow_client(uri: str) -> Any:
    """An `MlflowClient` on the store at `uri` (not MLflow's process-wide one)."""
    configure_client()  # before MLflow's first request
    import mlflow

    # A new client opens its store at once, and creates a SQLite one that does not exist yet:
    # a report started beside a first training must not migrate the same new file with it.
    with created_once(uri):
        return mlflow.MlflowClient(uri)


@contextmanager
def created_once(uri: str) -> Iterator[None]:
    """For a SQLite database (an MLflow store, an Optuna storage): the block runs while no
    other process of the pipeline runs such a block on it. Two processes creating the tables
    of one new file at once break it (MLflow's migrations); the first to come creates them,
    the others wait."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    database = Path(uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


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


def artifact_location(uri: str) -> str | None:
    """Where a new experiment's artifacts go: for a SQLite store, `mlruns/` beside its file."""
    if uri.startswith("sqlite:///"):
        return (Path(uri.removeprefix("sqlite:///")).parent / ARTIFACTS_DIR).as_uri()
    return None  # a tracking server decides for itself


# What a store says (lower-cased) while another process locks it or has just added the same
# experiment or dataset: safe to retry, as each such write is made whole or not at all.
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
def quick_answers() -> Iterator[None]:
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


def failure(uri: str, err: BaseException, when: str = "cannot use") -> TrackingError:
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
    elif "error code 401" in text:
        reason = _unauthenticated()
    elif "error code 403" in text:
        reason = f"it refused {_user()} (HTTP 403, permission denied)"
    elif "404" in text or "ENDPOINT_NOT_FOUND" in text or "JSONDecodeError" in text:
        reason = f"it does not answer as an MLflow tracking server ({reason[:160]})"
    return TrackingError(f"MLflow: {when} the tracking store {uri}: {reason[:300]}")


_CREDENTIALS = "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"


def _user() -> str:
    name = os.environ.get("MLFLOW_TRACKING_USERNAME")
    return f"user {name!r}" if name else "anonymous requests"


def _unauthenticated() -> str:
    """What to do about a server that asks who is calling (HTTP 401)."""
    if not os.environ.get("MLFLOW_TRACKING_USERNAME"):
        return f"it lets only its users in (HTTP 401): set {_CREDENTIALS} to your user there"
    return (
        f"it refused {_user()} (HTTP 401: a wrong password, or no such user): check {_CREDENTIALS}"
    )


def _check_may_write(uri: str, name: str, experiment_id: str) -> None:
    """On a server that lets only its users in (`mlflow server --app-name basic-auth`), refuse
    a user who may not add runs to the experiment (READ only), before any work.

    Raises:
        TrackingError: the user may not write there (one line: who, where, what to ask for).
    """
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if not user or uri.startswith("sqlite:///"):
        return  # no user to ask about: the server has no users, or refused already
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import http_request

    response = http_request(
        get_default_host_creds(uri), "/api/3.0/mlflow/users/permissions/get", "GET",
        params={"username": user, "resource_type": "experiment", "resource_id": experiment_id},
        max_retries=0, timeout=5,
    )  # fmt: skip
    if response.status_code != 200:
        return  # a server without users (404): the writes themselves will tell
    permission = response.json().get("permission", "?")
    if permission not in ("EDIT", "MANAGE"):
        raise TrackingError(
            f"MLflow: user {user!r} may not add runs to experiment {name!r} on the tracking "
            f"store {uri} (its permission there: {permission}; runs need EDIT): ask an admin "
            f"of the server for EDIT, or set {_CREDENTIALS} to a user who has it"
        )


def store_errors() -> tuple[type[BaseException], ...]:
    """What a store's failure raises: MlflowException (REST and SQL stores wrap theirs), OSError."""
    from mlflow.exceptions import MlflowException

    return (MlflowException, OSError)


@dataclass(frozen=True)
class Store:
    """A tracking store checked before work (`connect`): its URI, and the id there of the
    experiment runs go to. Entry points check once and pass it on."""

    uri: str
    experiment: str
    experiment_id: str


def connect(root: Path, experiment: str = DEFAULT_EXPERIMENT) -> Store:
    """Check the store (`experiment_id`, for writing) and say what was found.

    Raises:
        TrackingError: the store cannot be used (its URI and the cause).
    """
    uri = tracking_uri(root)
    return Store(uri, experiment, experiment_id(uri, experiment, writing=True))


def experiment_id(uri: str, name: str = DEFAULT_EXPERIMENT, writing: bool = False) -> str:
    """Point MLflow at the store at `uri` and return experiment `name`'s id, creating it once;
    with `writing`, also checked that this user may add runs to it.

    This is the check before any work: a store that is unreachable, refuses, or is not an
    MLflow server fails here in one line, within seconds.

    Raises:
        TrackingError: the store cannot be used (its URI and the cause).
    """
    configure_client()  # before MLflow's first request
    import mlflow

    mlflow.set_tracking_uri(uri)

    def get_or_create() -> str:
        client = mlflow.MlflowClient(uri)  # not mlflow_client: its lock is held below
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        return client.create_experiment(name, artifact_location=artifact_location(uri))

    try:
        if not uri.startswith("sqlite:///"):
            with quick_answers():
                found = retrying(get_or_create)
                if writing:
                    _check_may_write(uri, name, found)
                return found
        with created_once(uri):
            _write_ahead_log(Path(uri.removeprefix("sqlite:///")))
            return retrying(get_or_create)
    except TrackingError:
        raise
    except Exception as err:  # whatever the store's driver raised: said in one line
        raise failure(uri, err) from None


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
