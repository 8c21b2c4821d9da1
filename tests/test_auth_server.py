"""A shared server that lets only its users in: `mlflow server --app-name basic-auth` on
127.0.0.1 (the `auth` extra), its users made with MLflow's own API. Without credentials, with
wrong ones, or as a user who may only read the experiment, a training is refused in one line
before any work; a user who may edit gets a complete run, which records no credential."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OFFLINE, mlflow_server, python

# Starts an `mlflow server` and trains.
pytestmark = pytest.mark.slow

ADMIN = ("admin", "admin-password-4f1c9e2a")
EDITOR = ("alice", "alice-password-8d3b7e61")
READER = ("bob", "bob-password-2a9c5f04")
DATA = ["data.train_samples=2000", "data.test_samples=500"]
SMALL = [*OFFLINE, *DATA, "epochs=1", "model.hidden_units=[16]"]
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _as(user: tuple[str, str] | None) -> dict[str, str]:
    return dict(zip(CREDENTIALS, user, strict=True)) if user else {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The server, its admin from MLFLOW_AUTH_ADMIN_PASSWORD, the experiment `mnist`, a user
    who may edit it and one who may only read it."""
    import mlflow
    from mlflow.server import get_app_client

    base = tmp_path_factory.mktemp("auth-server")
    config = base / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{base / 'users.db'}\nadmin_username = {ADMIN[0]}\n"
    )
    env = {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN[1],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": "a-key-for-this-test-only",
    }
    args = ["--app-name", "basic-auth", "--artifacts-destination", str(base / "artifacts")]
    database = f"sqlite:///{base / 'mlflow.db'}"
    with mlflow_server(database, *args, log=base / "server.log", env=env) as url:
        with pytest.MonkeyPatch.context() as mp:
            for key, value in _as(ADMIN).items():
                mp.setenv(key, value)
            users = get_app_client("basic-auth", tracking_uri=url)
            experiment = mlflow.MlflowClient(url).create_experiment("mnist")
            for (name, password), permission in ((EDITOR, "EDIT"), (READER, "READ")):
                users.create_user(name, password)
                users.grant_user_permission(name, "experiment", experiment, permission)
        yield {"url": url, "experiment": experiment}


@pytest.fixture(scope="module")
def project(make_project) -> Path:
    paths, _ = make_project(*DATA)
    return paths.root


def _train(project: Path, server: dict, user: tuple[str, str] | None, name: str):
    assert not any(os.environ.get(k) for k in CREDENTIALS)  # only what each test gives
    env = {"MLFLOW_TRACKING_URI": server["url"], **_as(user)}
    return python(project, "-m", "pipeline.train", *SMALL, f"hydra.run.dir=outputs/{name}",
                  env=env, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("user", "line"),
    [
        (None, "it lets only its users in (HTTP 401): set MLFLOW_TRACKING_USERNAME and "
               "MLFLOW_TRACKING_PASSWORD to your user there"),
        ((EDITOR[0], "not-her-password"), "it refused user 'alice' (HTTP 401: a wrong "
         "password, or no such user): check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
    ],
    ids=["no credentials", "wrong password"],
)  # fmt: skip
def test_a_caller_the_server_does_not_know_is_refused_in_one_line_before_any_work(
    project: Path, server: dict, user: tuple[str, str] | None, line: str
) -> None:
    start = time.monotonic()
    result = _train(project, server, user, f"refused-{user and user[1]}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: MLflow: cannot use the tracking store {server['url']}: {line}"
    )
    assert "Traceback" not in result.stderr
    assert time.monotonic() - start < 30
    assert not list(project.glob("outputs/**/model.keras"))


def test_a_user_who_may_only_read_is_refused_in_one_line_before_any_work(
    project: Path, server: dict
) -> None:
    result = _train(project, server, READER, "reader")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: MLflow: user 'bob' may not add runs to experiment 'mnist' on the tracking store "
        f"{server['url']} (its permission there: READ; runs need EDIT): ask an admin of the "
        "server for EDIT, or set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to a "
        "user who has it"
    )
    assert not list(project.glob("outputs/**/model.keras"))


def test_a_user_who_may_edit_gets_a_complete_run_that_records_no_credential(
    project: Path, server: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    result = _train(project, server, EDITOR, "editor")
    assert result.returncode == 0, result.stderr[-3000:]
    for key, value in _as(ADMIN).items():  # to read everything back
        monkeypatch.setenv(key, value)
    client = mlflow.MlflowClient(server["url"])
    (run,) = client.search_runs([server["experiment"]])
    assert run.info.status == "FINISHED" and run.info.user_id == EDITOR[0]
    assert run.data.metrics["test_accuracy"] > 0.5
    models = client.search_logged_models(
        experiment_ids=[server["experiment"]], filter_string=f"source_run_id = '{run.info.run_id}'"
    )
    assert [(m.name, m.status) for m in models] == [("model", "READY")]

    # The password is nowhere: params, tags, every artifact, the job's own files.
    password = EDITOR[1]
    assert not [k for k, v in {**run.data.params, **run.data.tags}.items() if password in v]
    files = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "artifacts")))
    job = project / "outputs" / "editor"
    everything = [p for p in [*files.rglob("*"), *job.rglob("*")] if p.is_file()]
    assert any(p.name == "config.yaml" for p in everything)
    assert [p for p in everything if password.encode() in p.read_bytes()] == []
