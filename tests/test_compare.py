"""Comparing runs: sweeps grouped under a parent run, the comparison report, and the runs as
`mlflow server` serves them to the UI. The store is filled by a real 3-job sweep."""

from __future__ import annotations

import csv
import json
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OFFLINE, mlflow_server, python

# Sweeps of several trainings, and `mlflow server` and `mlflow ui` started on 127.0.0.1.
pytestmark = pytest.mark.slow

SWEEP = ["activation=relu,tanh,elu"]
SMALL = [*OFFLINE, "epochs=2", "data.train_samples=3000", "data.test_samples=1000",
         "model.hidden_units=[64]"]  # fmt: skip


def run(cwd: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return python(cwd, *args, env=env, check=check)


@pytest.fixture(scope="module")
def store(make_project, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh tracking store holding one 3-job sweep, run through the real CLI."""
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    run(paths.root, env, "-m", "pipeline.train", "-m", *SWEEP, *SMALL)
    return {"root": paths.root, "uri": uri, "env": env}


def client(store: dict):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=store["uri"])


def sweep_runs(store: dict) -> tuple:
    c = client(store)
    runs = c.search_runs([c.get_experiment_by_name("mnist").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


def test_sweep_is_one_parent_with_a_child_per_job(store: dict) -> None:
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["jobs"] == "3 of 3 finished"
    assert sorted(c.data.params["activation"] for c in children) == ["elu", "relu", "tanh"]
    assert sorted(c.data.tags["sweep_job"] for c in children) == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" for c in children)
    artifacts = {a.path for a in client(store).list_artifacts(parent.info.run_id, "compare")}
    assert artifacts == {f"compare/{n}" for n in ("table.md", "table.csv", "accuracy.png",
                                                  "curves.png")}  # fmt: skip


def test_report_orders_runs_and_computes_gaps(store: dict, tmp_path: Path) -> None:
    parent, children = sweep_runs(store)
    out = tmp_path / "report"
    result = run(store["root"], store["env"], "-m", "pipeline.compare", "--parent",
                 parent.info.run_id, "--out", str(out))  # fmt: skip
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    by_id = {c.info.run_id: c for c in children}
    assert sorted(r["run_id"] for r in rows) == sorted(by_id)
    tests = [float(r["test_accuracy"]) for r in rows]
    assert tests == sorted(tests, reverse=True)
    for row in rows:
        metrics = by_id[row["run_id"]].data.metrics
        assert float(row["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
        assert float(row["gap"]) == pytest.approx(
            metrics["train_accuracy"] - metrics["test_accuracy"], abs=1e-6
        )
        assert row["model"] == "mlp" and row["epochs"] == "2" and float(row["duration_s"]) > 0
    printed = result.stdout.splitlines()
    assert printed[0].split()[:4] == ["run", "data", "model", "activation"]
    assert [line.split()[0] for line in printed[1:4]] == [r["run"] for r in rows]
    for name in ("accuracy.png", "curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert (out / "table.md").read_text().count("| mlp-") == 3


def test_report_filter_and_top(store: dict, tmp_path: Path) -> None:
    result = run(store["root"], store["env"], "-m", "pipeline.compare", "--filter",
                 "params.activation = 'tanh'", "--out", str(tmp_path))  # fmt: skip
    assert [line.split()[3] for line in result.stdout.splitlines()[1:2]] == ["tanh"]
    assert (tmp_path / "table.csv").read_text().count("\n") == 1 + 1
    result = run(store["root"], store["env"], "-m", "pipeline.compare", "--top", "2",
                 "--out", str(tmp_path))  # fmt: skip
    assert (tmp_path / "table.csv").read_text().count("\n") == 1 + 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--filter", "params.activation = 'mish'"], "no evaluated runs in experiment 'mnist' "
         "matching params.activation = 'mish'"),
        (["--experiment", "nope"], "no experiment 'nope' in sqlite:///"),
    ],
)  # fmt: skip
def test_report_with_nothing_to_compare_says_so(
    store: dict, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(store["root"], store["env"], "-m", "pipeline.compare", *args, "--out",
                 str(tmp_path / "out"), check=False)  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.fixture
def server(store: dict) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 over the sweep's store; stopped even if the test fails."""
    with mlflow_server(store["uri"]) as url:
        yield url


def api(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


def test_ui_server_lists_the_runs_with_params_metrics_and_histories(server: str) -> None:
    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    children = [r for r in runs if any(t["key"] == "sweep_job" for t in r["data"]["tags"])]
    assert len(runs) == 4 and len(children) == 3
    for r in children:
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
        assert params["epochs"] == "2" and params["activation"] in {"relu", "tanh", "elu"}
        assert 0.5 < metrics["test_accuracy"] <= 1 and "generalization_gap" in metrics
        for name in ("epoch/train_accuracy", "epoch/test_accuracy"):
            query = urllib.parse.urlencode({"run_id": r["info"]["run_id"], "metric_key": name})
            history = api(server, f"metrics/get-history?{query}")["metrics"]
            assert sorted(m["step"] for m in history) == [1, 2]


def test_a_failed_job_fails_the_sweep_but_not_the_other_jobs(make_project, tmp_path: Path) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    # A learning rate of 1e30 overflows the weights: the loss is NaN after the first epoch.
    result = run(paths.root, env, "-m", "pipeline.train", "-m",
                 "optimizer.learning_rate=1e30,0.001", *SMALL, check=False)  # fmt: skip
    assert result.returncode == 1
    assert "error: job 0: loss became NaN at epoch 1" in result.stderr
    c = mlflow.MlflowClient(tracking_uri=uri)
    runs = c.search_runs([c.get_experiment_by_name("mnist").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    jobs = {r.data.tags["sweep_job"]: r for r in runs if "sweep_job" in r.data.tags}
    assert parent.info.status == "FAILED" and parent.data.tags["jobs"] == "1 of 2 finished"
    assert jobs["0"].info.status == "FAILED"
    assert jobs["0"].data.tags["error"] == "DivergedError: loss became NaN at epoch 1"
    assert jobs["1"].info.status == "FINISHED" and "test_accuracy" in jobs["1"].data.metrics


def test_ui_link_opens_the_mnist_runs_in_the_model_training_view(store: dict) -> None:
    code = "import pathlib, pipeline.tracking as t; print(t.ui_link(pathlib.Path(), 5055))"
    result = run(store["root"], store["env"], "-c", code)
    experiment = client(store).get_experiment_by_name("mnist").experiment_id
    assert result.stdout.strip() == (
        f"http://127.0.0.1:5055/#/experiments/{experiment}/runs?workflowType=machine_learning"
    )
