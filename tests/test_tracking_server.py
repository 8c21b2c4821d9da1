"""A shared tracking server: `mlflow server` with a real PostgreSQL backend store and an artifact
root, the pipeline's CLI pointed at it with `MLFLOW_TRACKING_URI=http://...`, two real trainings
read back through the server, and the runs found in PostgreSQL itself.

PostgreSQL comes from `MNIST_PIPELINE_POSTGRES_URL` (`postgresql://user:password@host:port/db`,
a role that may create databases; `.ci/run` starts such a server). Without it the tests are
skipped, unless `MNIST_PIPELINE_REQUIRE_POSTGRES=1` (or `CI`) is set: then they fail.
"""

from __future__ import annotations

import os
import urllib.parse
import urllib.request
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OFFLINE, download_model, mlflow_server, python

# Starts PostgreSQL-backed `mlflow server` processes.
pytestmark = pytest.mark.slow

URL_VAR = "MNIST_PIPELINE_POSTGRES_URL"
REQUIRE_VAR = "MNIST_PIPELINE_REQUIRE_POSTGRES"
DATA = ["data.train_samples=2000", "data.test_samples=500"]
SMALL = [*OFFLINE, *DATA, "epochs=2", "model.hidden_units=[64]"]
ACTIVATIONS = ("relu", "tanh")
EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy")


def with_database(url: str, name: str) -> str:
    """`url` naming the database `name` instead of its own."""
    return urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()


def sql(url: str, query: str, *args: object) -> list[tuple]:
    """The rows `query` returns in the database at `url` (autocommit: CREATE DATABASE needs it)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=10) as connection:
        cursor = connection.execute(query, args or None)
        return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def postgres_url() -> str:
    """The PostgreSQL server to use: skipped without one, failed when one is required."""
    url = os.environ.get(URL_VAR)
    if not url:
        msg = (
            f"no PostgreSQL server: set {URL_VAR}=postgresql://user:password@127.0.0.1:5432/db "
            "(a role that may create databases) to run the tracking-server tests"
        )
        if os.environ.get(REQUIRE_VAR) == "1" or os.environ.get("CI"):
            pytest.fail(f"{msg} ({REQUIRE_VAR} or CI is set: they must run)")
        pytest.skip(msg)
    return url


@pytest.fixture(scope="module")
def database(postgres_url: str) -> Iterator[str]:
    """A database of its own for this run (reruns start empty), dropped afterwards."""
    name = f"mnist_pipeline_test_{uuid.uuid4().hex[:12]}"
    sql(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(postgres_url, name)
    finally:
        sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """`mlflow server` on 127.0.0.1 over the database, serving the artifacts it stores under
    a directory of its own; stopped whatever the tests do."""
    base = tmp_path_factory.mktemp("tracking-server")
    artifacts = base / "artifacts"
    with mlflow_server(
        database, "--artifacts-destination", str(artifacts), log=base / "server.log"
    ) as url:
        yield {"url": url, "database": database, "artifacts": artifacts}


@pytest.fixture(scope="module")
def runs(server: dict, make_project) -> dict:
    """Two real trainings through the CLI, logged to the server; their runs by activation."""
    import mlflow

    paths, _ = make_project(*DATA)
    env = {"MLFLOW_TRACKING_URI": server["url"]}
    for activation in ACTIVATIONS:
        result = python(
            paths.root,
            "-m",
            "pipeline.train",
            *SMALL,
            f"activation={activation}",
            f"hydra.run.dir=outputs/{activation}",
            env=env,
        )
        assert f"in {server['url']}" in result.stdout
    client = mlflow.MlflowClient(tracking_uri=server["url"])
    experiment = client.get_experiment_by_name("mnist")
    found = client.search_runs([experiment.experiment_id])
    return {
        "client": client,
        "experiment": experiment,
        "by_activation": {r.data.params["activation"]: r for r in found},
        "count": len(found),
    }


def test_both_runs_finished_with_their_params_and_metrics(runs: dict) -> None:
    assert runs["count"] == 2 and sorted(runs["by_activation"]) == list(ACTIVATIONS)
    for activation, run in runs["by_activation"].items():
        assert run.info.status == "FINISHED"
        assert run.info.run_name == f"mlp-{activation}-rmsprop-e2-b128"
        params = run.data.params
        assert params["epochs"] == "2" and params["model.hidden_units"] == "[64]"
        assert params["data.train_samples"] == "2000" and params["data.test_samples"] == "500"
        assert run.data.tags["entry_point"] == "cli"
        metrics = run.data.metrics
        assert 0.7 < metrics["test_accuracy"] <= 1 and 0.7 < metrics["train_accuracy"] <= 1
        assert metrics["generalization_gap"] == pytest.approx(
            metrics["train_accuracy"] - metrics["test_accuracy"], abs=1e-6
        )


def test_per_epoch_metrics_are_served(runs: dict) -> None:
    client = runs["client"]
    for run in runs["by_activation"].values():
        for name in EPOCH_METRICS:
            history = client.get_metric_history(run.info.run_id, f"epoch/{name}")
            assert sorted(m.step for m in history) == [1, 2], name
        last = max(
            client.get_metric_history(run.info.run_id, "epoch/test_accuracy"), key=lambda m: m.step
        )
        assert last.value == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)


def test_model_and_files_are_stored_and_served_by_the_server(
    runs: dict, server: dict, tmp_path: Path
) -> None:
    # Artifacts go through the server (mlflow-artifacts:/), not to a path the client writes.
    assert runs["experiment"].artifact_location.startswith("mlflow-artifacts:")
    client = runs["client"]
    for run in runs["by_activation"].values():
        run_id = run.info.run_id
        listed = {a.path for a in client.list_artifacts(run_id)}
        assert {"metrics.json", "history.csv", "config.yaml", "plots"} <= listed
        # The model: an MLflow 3 logged model of the run, its files served by the server too.
        (logged,) = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        model = download_model(server["url"], run_id, tmp_path / run_id)
        assert "loader_module: pipeline.models.serving" in (model / "MLmodel").read_text()
        (saved,) = model.rglob("*.keras")
        assert zipfile.is_zipfile(saved) and saved.stat().st_size > 10_000
        # The server keeps them under its artifact root.
        stored = server["artifacts"].rglob(f"{logged.model_id}/artifacts/MLmodel")
        assert len(list(stored)) == 1


def test_runs_are_rows_in_postgresql(runs: dict, server: dict) -> None:
    rows = sql(
        server["database"],
        "SELECT run_uuid, status FROM runs WHERE experiment_id = %s",
        int(runs["experiment"].experiment_id),
    )
    expected = {(r.info.run_id, "FINISHED") for r in runs["by_activation"].values()}
    assert set(rows) == expected
    ((epochs,),) = sql(
        server["database"],
        "SELECT count(*) FROM metrics WHERE key = 'epoch/test_accuracy' AND run_uuid = ANY(%s)",
        [run_id for run_id, _ in expected],
    )
    assert epochs == 2 * len(ACTIVATIONS)
