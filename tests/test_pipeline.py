"""Integration on real MNIST: download over HTTP (fixtures), preprocess, train, evaluate, and
the MLflow run read back through MLflow's own client."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import ROOT, assert_run_holds, config

from pipeline.data.prepared import load_prepared, read_aligned, split_validation
from pipeline.errors import DataError
from pipeline.evaluate import evaluate
from pipeline.fit import FitResult, fit
from pipeline.models.scoring import probabilities
from pipeline.paths import Paths
from pipeline.predictions import accuracy_and_loss
from pipeline.tracking import store
from pipeline.tracking.liveness import process_start
from pipeline.tracking.params import dvc_dir_md5
from pipeline.tracking.runs import active_run
from pipeline.tracking.store import connect, retrying, store_root, tracking_uri

METRIC_KEYS = {"train_accuracy", "test_accuracy", "train_loss", "test_loss", "generalization_gap",
               "best_epoch", "epochs_past_best", "heldout_loss_rise", "heldout"}  # fmt: skip


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000, path


def test_preprocess_matches_the_seed_preparation(make_project, raw_dir: Path) -> None:
    from pipeline.data.idx import load_raw

    paths, _ = make_project("data.train_samples=1000", "data.test_samples=500")
    raw = load_raw(raw_dir, 10)
    x, y = load_prepared(paths, "train")
    assert x.shape == (1000, 784) and x.dtype == np.uint8  # stored as bytes ...
    assert y.shape == (1000, 10) and y.dtype == np.float32
    # ... read as the seed prepares them: reshape((60000, 28 * 28)).astype("float32") / 255,
    # bit for bit, in memory TensorFlow can take over (64-byte aligned).
    images, labels = read_aligned(x, y)
    assert images.dtype == np.float32 and images.ctypes.data % 64 == 0
    np.testing.assert_array_equal(
        images, raw["x_train"][:1000].reshape(1000, 784).astype("float32") / 255
    )
    np.testing.assert_array_equal(labels, y)
    np.testing.assert_array_equal(y.argmax(axis=1), raw["y_train"][:1000])
    assert set(np.unique(y)) == {0.0, 1.0} and (y.sum(axis=1) == 1).all()
    assert load_prepared(paths, "test")[0].shape == (500, 784)
    assert_png(paths.samples_plot)


def test_stale_prepared_data_is_detected_before_training(make_project, tmp_path: Path) -> None:
    paths, cfg = make_project("data.train_samples=100", "data.test_samples=100")
    np.save(paths.prepared / "x_train.npy", np.zeros((100, 28, 28), np.uint8))  # pre-reshape
    with pytest.raises(DataError, match="stale or damaged.*re-run preprocess"):
        fit(cfg, paths)


@pytest.fixture(scope="module")
def trained(small_project) -> tuple[Paths, FitResult, dict]:
    paths, cfg = small_project
    result = fit(cfg, paths)
    metrics = evaluate(cfg, paths)
    return paths, result, metrics


def test_metrics_are_in_range_and_consistent(trained) -> None:
    paths, _, metrics = trained
    assert set(metrics) == METRIC_KEYS
    assert 0.85 < metrics["test_accuracy"] < 1.0  # one epoch on 6,000 images; chance is 0.1
    assert 0.85 < metrics["train_accuracy"] < 1.0
    assert 0 < metrics["train_loss"] < 0.6 and 0 < metrics["test_loss"] < 0.6
    gap = metrics["train_accuracy"] - metrics["test_accuracy"]
    assert metrics["generalization_gap"] == pytest.approx(gap, abs=1e-6)
    # One epoch: the best one, measured on the test set (no validation split).
    assert (metrics["best_epoch"], metrics["epochs_past_best"]) == (1, 0)
    assert metrics["heldout_loss_rise"] == 0 and metrics["heldout"] == "test"
    assert json.loads(paths.metrics.read_text()) == metrics


def test_epoch_train_accuracy_is_scored_with_the_epochs_final_weights(trained) -> None:
    _, result, metrics = trained
    history = result.history
    # 6,000 fitted images, all in the scored subset: after the last epoch, the per-epoch
    # train score is the final model's on everything it was fitted on, as evaluate finds it.
    assert history["train_accuracy"][-1] == pytest.approx(metrics["train_accuracy"], abs=1e-6)
    assert history["train_loss"][-1] == pytest.approx(metrics["train_loss"], abs=1e-5)
    # Keras' running average over the epoch, kept under its own name, is not that score.
    assert history["train_running_accuracy"][-1] != pytest.approx(
        history["train_accuracy"][-1], abs=1e-4
    )
    for epoch in range(len(history["test_accuracy"])):
        gap = history["train_accuracy"][epoch] - history["test_accuracy"][epoch]
        assert history["generalization_gap"][epoch] == pytest.approx(gap, abs=1e-9)
        loss_gap = history["test_loss"][epoch] - history["train_loss"][epoch]
        assert history["loss_gap"][epoch] == pytest.approx(loss_gap, abs=1e-9)


def test_saved_model_reloads_safely_and_scores_the_same(trained) -> None:
    import keras

    paths, _, metrics = trained
    model = keras.saving.load_model(paths.model, safe_mode=True)
    x, y = read_aligned(*load_prepared(paths, "test"))
    accuracy, loss = accuracy_and_loss(probabilities(model, x), y)
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(metrics["test_loss"], abs=1e-5)


def test_reports_per_class_and_confusion(trained) -> None:
    paths, _, metrics = trained
    with open(paths.confusion) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2000
    correct = sum(r["actual"] == r["predicted"] for r in rows)
    assert correct / len(rows) == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    with open(paths.per_class) as f:
        per_class = list(csv.DictReader(f))
    assert [r["class"] for r in per_class] == [str(d) for d in range(10)]  # MNIST's names
    assert all(0.5 < float(r["test_accuracy"]) <= 1 for r in per_class)
    with open(paths.history) as f:
        history = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in history] == [1]
    assert set(history[0]) == {
        "epoch",
        "train_loss",
        "train_accuracy",
        "train_running_loss",
        "train_running_accuracy",
        "test_loss",
        "test_accuracy",
        "generalization_gap",
        "loss_gap",
    }
    for png in (paths.confusion_plot, paths.learning_curves):
        assert_png(png)


def test_mlflow_run_holds_what_the_files_hold(trained) -> None:
    import mlflow

    paths, result, metrics = trained
    client = mlflow.MlflowClient()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mlp-relu-rmsprop-e1-b128"
    assert client.get_experiment(run.info.experiment_id).name == "mnist"
    assert_run_holds(run, metrics)
    assert run.data.tags["heldout"] == "test"
    params = run.data.params
    assert params["activation"] == "relu"
    assert params["model.hidden_units"] == "[512]"
    assert params["optimizer.name"] == "rmsprop"
    assert params["epochs"] == "1" and params["batch_size"] == "128"
    assert params["data.train_samples"] == "6000"
    tags = run.data.tags
    assert tags["entry_point"] == "api"
    assert len(tags["git_commit"]) == 40 or tags["git_commit"] == "unknown"
    assert tags["dvc_data_md5"] == dvc_dir_md5(paths.prepared)
    # Where it ran (this process, this machine's CPU) and its last beat.
    assert (tags["host"], tags["pid"]) == (socket.gethostname(), str(os.getpid()))
    assert tags["process_start"] == process_start(os.getpid()) and tags["heartbeat"]
    assert tags["devices"] == "CPU:0" and "device_warning" not in tags
    for name in ("train_accuracy", "train_loss", "test_accuracy", "test_loss",
                 "train_running_accuracy", "generalization_gap", "loss_gap"):  # fmt: skip
        history = client.get_metric_history(run.info.run_id, f"epoch/{name}")
        assert [m.step for m in history] == [1]
        assert history[0].value == pytest.approx(result.history[name][0])
    # After the last epoch, the per-epoch test score is the final one.
    assert result.history["test_accuracy"][-1] == pytest.approx(metrics["test_accuracy"], abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "history.csv", "per_class_accuracy.csv", "confusion.csv", "plots",
            "config.yaml", "model_summary.txt"} <= artifacts  # fmt: skip
    # The model is an MLflow 3 logged model of the run (its artifacts are the model's own).
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
    )
    assert [m.name for m in models] == ["model"]
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert plots == {f"plots/{n}.png" for n in ("learning_curves", "confusion_matrix",
                                                "misclassified")}  # fmt: skip
    config = yaml.safe_load(mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config.yaml"))
    assert config["activation"] == "relu" and config["model"]["hidden_units"] == [512]
    summary = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/model_summary.txt")
    assert "407,050" in summary


@pytest.mark.slow
def test_logged_model_scores_like_the_saved_one(trained, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import keras
    import mlflow

    paths, result, _ = trained
    uri = f"runs:/{result.run_id}/model"
    x, _ = read_aligned(*load_prepared(paths, "test"))
    expected = keras.saving.load_model(paths.model).predict(x[:20], verbose=0)
    np.testing.assert_allclose(mlflow.pyfunc.load_model(uri).predict(np.asarray(x[:20])),
                               expected, rtol=1e-5, atol=1e-6)  # fmt: skip
    # The signature and input example make the model scorable from the command line.
    info = mlflow.models.get_model_info(uri)
    assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 784]
    example = mlflow.artifacts.download_artifacts(f"{uri}/serving_input_example.json")
    out = tmp_path / "predictions.json"
    subprocess.run(
        [str(Path(sys.executable).parent / "mlflow"), "models", "predict", "-m", uri, "-i",
         example, "-t", "json", "-o", str(out), "--env-manager", "local"],
        check=True, capture_output=True, env=os.environ.copy(), timeout=300,
    )  # fmt: skip
    predictions = np.array(json.loads(out.read_text())["predictions"])
    assert predictions.shape == (5, 10)
    np.testing.assert_allclose(predictions, expected[:5], rtol=1e-5, atol=1e-6)


def test_validation_split_and_early_stopping_keep_the_best_weights(
    small_project, tmp_path: Path
) -> None:
    import keras
    import mlflow

    paths, cfg = small_project
    cfg = config(
        "data.train_samples=6000",
        "data.test_samples=2000",
        "epochs=4",
        "val_split=0.25",
        "early_stopping.patience=1",
        "optimizer.learning_rate=0.01",
    )
    run_paths = Paths(root=paths.root, out=tmp_path)
    result = fit(cfg, run_paths)
    metrics = evaluate(cfg, run_paths)
    history = result.history
    assert {"val_loss", "val_accuracy", "test_loss", "test_accuracy"} <= set(history)
    epochs = len(history["val_loss"])
    names = set(mlflow.MlflowClient().get_run(result.run_id).data.metrics)
    assert {"epoch/val_accuracy", "epoch/test_accuracy", "epoch/train_accuracy"} <= names
    # Overfitting is measured on the validation set here, and the run says so.
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.data.tags["heldout"] == metrics["heldout"] == "validation"
    best = history["val_loss"].index(min(history["val_loss"])) + 1
    assert metrics["best_epoch"] == run.data.metrics["best_epoch"] == best
    assert metrics["epochs_past_best"] == epochs - best
    rise = history["val_loss"][-1] - min(history["val_loss"])
    assert metrics["heldout_loss_rise"] == pytest.approx(rise, abs=1e-9)
    gaps = [t - v for t, v in zip(history["train_accuracy"], history["val_accuracy"], strict=True)]
    assert history["generalization_gap"] == pytest.approx(gaps, abs=1e-9)
    x_fit, y_fit, x_val, y_val = split_validation(
        *read_aligned(*load_prepared(paths, "train")), 0.25
    )
    assert (len(x_fit), len(x_val)) == (4500, 1500)
    model = keras.saving.load_model(run_paths.model, safe_mode=True)
    # The saved weights are the best epoch's, not the last one's.
    val_accuracy, val_loss = accuracy_and_loss(probabilities(model, x_val), y_val)
    assert val_loss == pytest.approx(min(history["val_loss"]), abs=1e-4)
    # Evaluate scored that final model on the validation rows too, and the run has it.
    assert metrics["val_accuracy"] == pytest.approx(val_accuracy, abs=1e-6)
    assert metrics["val_loss"] == pytest.approx(val_loss, abs=1e-5)
    assert run.data.metrics["val_accuracy"] == metrics["val_accuracy"]
    assert run.data.metrics["val_loss"] == metrics["val_loss"]
    # Training accuracy is measured on the 4,500 images fitted, not the held-out ones.
    assert metrics["train_accuracy"] == pytest.approx(
        accuracy_and_loss(probabilities(model, x_fit), y_fit)[0], abs=1e-6
    )
    assert 1 <= epochs <= 4


def test_same_config_gives_the_same_metrics(small_project, tmp_path: Path) -> None:
    paths, cfg = small_project
    results = []
    for name in ("a", "b"):
        run_paths = Paths(root=paths.root, out=tmp_path / name)
        fit(cfg, run_paths)
        results.append(evaluate(cfg, run_paths))
    for key in METRIC_KEYS:
        assert results[0][key] == pytest.approx(results[1][key], abs=1e-3), key


def test_a_failing_run_is_marked_failed_with_its_error(tmp_path: Path) -> None:
    import mlflow

    with (
        pytest.raises(RuntimeError),
        active_run(connect(tmp_path, "mnist"), run_name="doomed") as run,
    ):
        raise RuntimeError("disk on fire")
    finished = mlflow.MlflowClient().get_run(run.info.run_id)
    assert finished.info.status == "FAILED"
    assert finished.data.tags["error"] == "RuntimeError: disk on fire"


def test_tracking_store_of_a_dvc_queue_copy_is_the_project(tmp_path: Path) -> None:
    copy = tmp_path / "proj" / ".dvc" / "tmp" / "exps" / "tmpabc123"
    copy.mkdir(parents=True)
    assert store_root(copy) == (tmp_path / "proj").resolve()
    assert store_root(tmp_path) == tmp_path.resolve()


def test_default_store_is_sqlite_at_the_project_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    uri = tracking_uri(tmp_path)
    assert store.artifact_location(uri) == (tmp_path.resolve() / "mlruns").as_uri()


def test_importing_tracking_changes_no_environment(tmp_path: Path) -> None:
    """MLflow's client settings are made where work with a store starts, the user's first."""
    check = (
        "import os; before = dict(os.environ);"
        "from pipeline.tracking import models, offline, params, runs, search, store;"
        "assert dict(os.environ) == before; store.configure_client();"
        "assert os.environ['MLFLOW_HTTP_REQUEST_TIMEOUT'] == '7';"
        "assert os.environ['MLFLOW_HTTP_REQUEST_MAX_RETRIES'] == '2'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST")}
    env.pop("MLFLOW_ASYNC_LOGGING_BUFFERING_SECONDS", None)
    env.update(MLFLOW_HTTP_REQUEST_TIMEOUT="7", PYTHONPATH=str(ROOT))
    subprocess.run([sys.executable, "-c", check], cwd=tmp_path, env=env, check=True)


def test_config_used_by_fixtures_is_offline() -> None:
    assert list(config().data.sources) == []


def test_a_busy_store_is_retried_and_other_errors_are_not() -> None:
    import sqlite3

    calls = []

    def busy_twice() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert retrying(busy_twice) == "done" and len(calls) == 3

    def broken() -> None:
        calls.append(1)
        raise sqlite3.OperationalError("no such column: runs.foo")

    calls.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such column"):
        retrying(broken)
    assert len(calls) == 1
