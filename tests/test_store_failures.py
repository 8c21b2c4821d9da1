"""A tracking store that is down, silent, not MLflow, or dies mid-run: checked before any work
in one line within seconds; a run it loses stays whole in its job directory, and
`python -m pipeline.tracking log <job dir>` records it later."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import (
    OFFLINE,
    assert_run_holds,
    command_env,
    download_model,
    free_port,
    mlflow_server,
    python,
)

SMALL = [*OFFLINE, "data.train_samples=1000", "data.test_samples=500", "model.hidden_units=[16]",
         "epochs=1"]  # fmt: skip


def _refused(root: Path, uri: str, *args: str) -> tuple[str, float]:
    """Run `python -m pipeline.train` against `uri`; its last stderr line and its seconds."""
    start = time.monotonic()
    result = python(root, "-m", "pipeline.train", *SMALL, *args,
                    env={"MLFLOW_TRACKING_URI": uri}, check=False)  # fmt: skip
    seconds = time.monotonic() - start
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1], seconds


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(listener.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        listener.close()


@contextlib.contextmanager
def web_server() -> Iterator[str]:
    """A web server, but not MLflow's: every path is a 404 page."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/nothing-here"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def project(make_project) -> Path:
    paths, _ = make_project("data.train_samples=1000", "data.test_samples=500")
    return paths.root


def _no_job_ran(root: Path) -> None:
    """Nothing was trained: no job directory holds a model."""
    assert not list((root / "outputs").rglob("model.keras"))


@contextlib.contextmanager
def nothing_listening() -> Iterator[str]:
    """A port on this machine where nothing listens."""
    yield f"http://127.0.0.1:{free_port()}"


@pytest.mark.parametrize(
    ("store", "cause"),
    [
        (nothing_listening, "nothing answers there (connection refused)"),
        (silent_server, "no answer within the time allowed"),
        (web_server, "it does not answer as an MLflow tracking server"),
    ],
)
def test_a_store_that_cannot_record_is_named_in_one_line_within_seconds(
    project: Path, store, cause: str
) -> None:
    with store() as uri:
        last, seconds = _refused(project, uri)
    assert last.startswith(f"error: MLflow: cannot use the tracking store {uri}: {cause}"), last
    assert seconds < 30  # MLflow's own retries took 252 s for a port with nothing listening
    _no_job_ran(project)


def test_a_job_directory_without_a_finished_run_is_refused(tmp_path: Path) -> None:
    result = python(tmp_path, "-m", "pipeline.tracking", "log", str(tmp_path), check=False)
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {tmp_path} holds no finished run")
    )


@pytest.mark.slow
def test_a_server_killed_mid_training_leaves_the_run_for_later_logging(
    make_project, tmp_path: Path
) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=6000", "data.test_samples=1000")
    database = f"sqlite:///{tmp_path / 'server.db'}"
    server_args = ["--artifacts-destination", str(tmp_path / "artifacts")]
    args = [*OFFLINE, "data.train_samples=6000", "data.test_samples=1000", "epochs=4",
            "model.hidden_units=[256]", "hydra.run.dir=outputs/killed"]  # fmt: skip
    with mlflow_server(database, *server_args) as url:
        job = subprocess.Popen(
            [sys.executable, "-m", "pipeline.train", *args], cwd=paths.root,
            env=command_env(url),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        # Stop the server once training has begun (Keras prints each epoch's line).
        for line in job.stdout:
            if line.startswith("Epoch 2/"):
                break
        client = mlflow.MlflowClient(tracking_uri=url)
        (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    # The server is gone (the block stopped it); the training goes on and ends in one line.
    out, err = job.communicate(timeout=600)
    assert job.returncode == 1, err[-3000:]
    assert "Traceback" not in err
    job_dir = paths.root / "outputs" / "killed"
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"error: MLflow: lost the tracking store {url}: "), last
    assert f"`python -m pipeline.tracking log {job_dir}`" in last
    # Its files are whole: model, predictions, history, reports.
    metrics = json.loads((job_dir / "reports" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8
    history = (job_dir / "reports" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 4

    # Later, the store back (the same database, served anew): the run is completed.
    with mlflow_server(database, *server_args) as url:
        result = python(paths.root, "-m", "pipeline.tracking", "log", str(job_dir),
                        env={"MLFLOW_TRACKING_URI": url})  # fmt: skip
        assert run.info.run_id in result.stdout
        client = mlflow.MlflowClient(tracking_uri=url)
        logged = client.get_run(run.info.run_id)
        assert logged.info.status == "FINISHED"
        assert_run_holds(logged, metrics)
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch/test_accuracy")]
        assert sorted(set(steps)) == [1, 2, 3, 4]
        assert len(steps) == 4  # the epochs logged live are not logged twice
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"plots", "history.csv", "metrics.json", "config.yaml"} <= artifacts
        models = client.search_logged_models(
            experiment_ids=[logged.info.experiment_id],
            filter_string=f"source_run_id = '{run.info.run_id}'",
        )
        assert [(m.name, m.status) for m in models] == [("model", "READY")], models
        local = download_model(url, run.info.run_id, tmp_path)
        model = mlflow.pyfunc.load_model(str(local))
        assert model.metadata.get_input_schema() is not None
        # Logging it again adds nothing: the store already has every epoch.
        python(paths.root, "-m", "pipeline.tracking", "log", str(job_dir),
               env={"MLFLOW_TRACKING_URI": url})  # fmt: skip
        again = client.get_metric_history(run.info.run_id, "epoch/test_accuracy")
        assert len(again) == 4


# Two runs that log an epoch's metrics in the background while the SQLite store refuses every
# new metric (a trigger on its table raising "disk I/O error"): in the first the store lets
# them in again before the run ends, in the second it never does.
_REFUSED_IN_THE_BACKGROUND = """
import sqlite3, sys
from pathlib import Path
import mlflow
from pipeline.tracking.runs import active_run, log_metrics
from pipeline.tracking.store import connect
store = sqlite3.connect(sys.argv[1])
for recovers in (True, False):
    with active_run(connect(Path.cwd(), "mnist")) as run:
        print(run.info.run_id, flush=True)
        store.execute("CREATE TRIGGER refuse BEFORE INSERT ON metrics "
                      "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END")
        store.commit()
        log_metrics({"epoch/test_accuracy": 0.5}, step=1, wait=False)
        mlflow.flush_async_logging()  # the batch is tried, and refused
        if recovers:
            store.execute("DROP TRIGGER refuse")
            store.commit()
"""


@pytest.mark.slow  # two runs in a process of their own
def test_metrics_logged_in_the_background_are_never_lost_silently(tmp_path: Path) -> None:
    """A batch the store refused is logged again before the run ends; if the store still
    refuses, the run's logging ends in one line naming the store and its error."""
    import mlflow

    database = tmp_path / "mlflow.db"
    uri = f"sqlite:///{database}"
    result = python(tmp_path, "-c", _REFUSED_IN_THE_BACKGROUND, str(database),
                    env={"MLFLOW_TRACKING_URI": uri}, check=False)  # fmt: skip
    # MLflow's logging thread was refused, and only said so in its log.
    assert result.stderr.count("Failed to log run data") == 2
    assert "(sqlite3.IntegrityError) disk I/O error" in result.stderr
    client = mlflow.MlflowClient(tracking_uri=uri)
    recovered, failing = (client.get_run(i) for i in result.stdout.split())
    history = client.get_metric_history(recovered.info.run_id, "epoch/test_accuracy")
    assert "MLflow: the metrics of step 1, refused in the background, are logged" in (result.stderr)
    assert recovered.info.status == "FINISHED"
    assert [(m.step, m.value) for m in history] == [(1, 0.5)]
    # The store that still refuses: its error, in one line, and the run FAILED.
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "pipeline.errors.TrackingError: MLflow: lost the tracking store "
        f"{uri}: MlflowException: (sqlite3.IntegrityError) disk I/O error"
    )
    assert failing.info.status == "FAILED"
    assert client.get_metric_history(failing.info.run_id, "epoch/test_accuracy") == []
