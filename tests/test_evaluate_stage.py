"""The evaluate stage as DVC runs it (`python -m pipeline.evaluate`): it completes the MLflow
run the train stage opened, and fails in one line, logging nothing, when it cannot."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from conftest import OFFLINE, assert_run_holds, python
from omegaconf import OmegaConf

SMALL = [*OFFLINE, "epochs=1", "data.train_samples=3000", "data.test_samples=1000",
         "model.hidden_units=[64]"]  # fmt: skip


@pytest.fixture(scope="module")
def trained_stage(make_project) -> tuple[Path, str]:
    """A project as the train stage leaves it (params.yaml, models/), and its store (the
    session's: MLflow keeps the URI a training in this process used)."""
    from pipeline.config import compose
    from pipeline.fit import fit
    from pipeline.paths import Paths

    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    cfg = compose(SMALL)
    params = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    (paths.root / "params.yaml").write_text(yaml.safe_dump(params))
    fit(cfg, Paths.project(paths.root))
    return paths.root, os.environ["MLFLOW_TRACKING_URI"]


def test_evaluate_stage_logs_its_reports_into_the_training_run(trained_stage) -> None:
    import mlflow

    root, uri = trained_stage
    env = {"MLFLOW_TRACKING_URI": uri}
    result = python(root, "-X", "importtime", "-m", "pipeline.evaluate", env=env)
    # It reports on the saved predictions: TensorFlow is never loaded.
    loaded = {line.split("|")[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    assert "numpy" in loaded and not {"tensorflow", "keras"} & loaded
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == metrics
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(json.loads((root / "models" / "run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED"
    assert_run_holds(run, metrics)
    assert {f"test_accuracy_class_{d}" for d in range(10)} <= set(run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "per_class_accuracy.csv", "confusion.csv"} <= logged
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/misclassified.png"} <= plots


def test_a_store_that_cannot_record_fails_the_evaluate_stage_in_one_line(trained_stage) -> None:
    root, _ = trained_stage
    (root / "not-a-dir").write_text("")
    uri = f"sqlite:///{root / 'not-a-dir' / 'mlflow.db'}"
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri}, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow: "), result.stderr[-2000:]
    assert str(root / "not-a-dir") in last  # the store's path, which cannot be a directory


def test_evaluate_refuses_predictions_of_another_model_run_or_data(trained_stage) -> None:
    """Whatever the predictions file says made it is checked first; nothing is written."""
    import numpy as np

    from pipeline.config import load_params
    from pipeline.errors import PipelineError
    from pipeline.evaluate import evaluate
    from pipeline.paths import Paths

    root, _ = trained_stage
    models, paths = root / "models", Paths.project(root)
    evaluate(load_params(str(root / "params.yaml")), paths)  # what it wrote when accepted
    metrics = (root / "reports" / "metrics.json").read_bytes()

    def refused(match: str, cfg=None) -> None:
        with pytest.raises(PipelineError, match=match):
            evaluate(cfg or load_params(str(root / "params.yaml")), paths)
        assert (root / "reports" / "metrics.json").read_bytes() == metrics

    saved = {name: (models / name).read_bytes() for name in ("model.keras", "predictions.npz")}
    try:
        (models / "model.keras").write_bytes(saved["model.keras"] + b"\0")  # another model
        refused("is not the model MLflow run")
        (models / "model.keras").write_bytes(saved["model.keras"])
        with np.load(models / "predictions.npz") as archive:
            arrays = {k: archive[k] for k in archive.files}
        np.savez(models / "predictions.npz", **{**arrays, "run_id": np.array("0" * 32)})
        refused(f"was made by MLflow run {'0' * 32}")
        (models / "predictions.npz").write_bytes(saved["predictions.npz"])
        # Fitted on all 3,000 training images; with a validation split, on fewer.
        params = root / "other.yaml"
        params.write_text((root / "params.yaml").read_text().replace("val_split: 0.0",
                                                                     "val_split: 0.2"))  # fmt: skip
        refused("holds predictions on other train data", load_params(str(params)))
        # Predictions on the rows that split fits on, but none on its validation rows.
        from pipeline.data.prepared import read_meta, split_digest

        fitted = split_digest(read_meta(paths.of("mnist")), "train", 0, 2400)
        np.savez(models / "predictions.npz", **{**arrays, "train_digest": np.array(fitted)})
        refused(
            "holds no predictions on the validation rows that val_split=0.2 holds out",
            load_params(str(params)),
        )
    finally:
        for name, data in saved.items():
            (models / name).write_bytes(data)
    evaluate(load_params(str(root / "params.yaml")), paths)  # all restored: accepted again


def test_a_failed_evaluation_logs_nothing(trained_stage) -> None:
    import mlflow

    root, uri = trained_stage
    run_id = json.loads((root / "models" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    before = client.get_run(run_id).data.metrics
    logged = len(client.get_metric_history(run_id, "test_accuracy"))  # by the first test
    (root / "models" / "model.keras").unlink()
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri}, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model at ")
    (root / "models" / "run.json").unlink()  # nothing trained at all: the same one line
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri}, check=False)
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model at ")
    assert client.get_run(run_id).data.metrics == before  # nothing more was logged
    assert len(client.get_metric_history(run_id, "test_accuracy")) == logged
