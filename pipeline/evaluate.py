"""Stage 4, evaluate: score the saved model on the full training and test sets
(`dvc repro evaluate`, or `python -m pipeline.evaluate`).

Writes reports/metrics.json (the numbers `dvc metrics show` reads), per-class test accuracy
and the confusion matrix (DVC plots and a PNG), and logs the same numbers and files to the
MLflow run that trained the model, so DVC and MLflow agree.
"""

from __future__ import annotations

import csv
import json
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from omegaconf import DictConfig

from pipeline import plots, tracking
from pipeline.cli import run_stage
from pipeline.config import validate
from pipeline.data.prepared import image_shape, load_prepared, read_aligned, split_validation
from pipeline.io import atomic_path, write_json
from pipeline.paths import Paths

# How many of the most confidently misclassified test images the gallery shows.
GALLERY = 24


def evaluate(cfg: DictConfig, paths: Paths | None = None) -> dict[str, float]:
    """Evaluate `paths.model`, write the reports and log them to the training run.

    Returns:
        The contents of reports/metrics.json.
    """
    cfg = validate(cfg)
    paths = (paths or Paths.project()).of(cfg.data.name)
    (train_x, y_train), (test_x, y_test) = (
        load_prepared(paths, "train"),
        load_prepared(paths, "test"),
    )
    # The data is read on another core while TensorFlow and Keras are imported (on one).
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_aligned, train_x, test_x)
        from pipeline.models.scoring import as_tensors, load_model, score

        model = load_model(paths.model)
        x_train, x_test = as_tensors(reading.result())
    run = json.loads(paths.run_info.read_text())  # written with the model
    # Training accuracy is measured on what the model was fitted on: without the validation
    # split when there is one.
    x_fit, y_fit, _, _ = split_validation(x_train, y_train, cfg.val_split)
    results = {}
    for split, (x, y) in {"train": (x_fit, y_fit), "test": (x_test, y_test)}.items():
        accuracy, loss, probs = score(model, x, y)
        results[split] = {"accuracy": accuracy, "loss": loss}
    truth = y_test.argmax(axis=1)  # `probs` are the test split's, scored last
    predicted = probs.argmax(axis=1)
    names = list(cfg.data.classes)
    classes = y_test.shape[1]
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)

    metrics = {
        "train_accuracy": round(results["train"]["accuracy"], 6),
        "test_accuracy": round(results["test"]["accuracy"], 6),
        "train_loss": round(results["train"]["loss"], 6),
        "test_loss": round(results["test"]["loss"], 6),
    }
    metrics["generalization_gap"] = round(metrics["train_accuracy"] - metrics["test_accuracy"], 6)
    write_json(paths.metrics, metrics)
    with atomic_path(paths.per_class) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "test_accuracy"])
        writer.writerows([name, f"{acc:.6f}"] for name, acc in zip(names, per_class, strict=True))
    with atomic_path(paths.confusion) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        pairs = zip(truth.tolist(), predicted.tolist(), strict=True)
        writer.writerows([names[t], names[p]] for t, p in pairs)
    title = f"{run['run_name']}: test accuracy {metrics['test_accuracy']:.4f}"
    plots.confusion_matrix(matrix, names, paths.confusion_plot, title)
    wrong = np.flatnonzero(predicted != truth)
    confidence = probs[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence)][:GALLERY]
    plots.misclassified_gallery(
        np.asarray(test_x[worst]).reshape(-1, *image_shape(paths)),
        [names[t] for t in truth[worst].tolist()], [names[p] for p in predicted[worst].tolist()],
        probs[worst, predicted[worst]], paths.misclassified_plot,
    )  # fmt: skip

    # By the class's index: names may hold characters metric keys do not (T-shirt/top).
    per_class_metrics = {f"test_accuracy_class_{i}": float(a) for i, a in enumerate(per_class)}
    files = [(paths.metrics, None), (paths.per_class, None), (paths.confusion, None),
             (paths.confusion_plot, "plots"), (paths.misclassified_plot, "plots")]  # fmt: skip
    tracking.log_to_run(
        paths.root, cfg.tracking.experiment, run, {**metrics, **per_class_metrics}, files
    )
    print(json.dumps(metrics))
    return metrics


def main() -> None:
    """Evaluate models/model.keras on the prepared data; write reports/metrics.json."""
    run_stage(lambda cfg: evaluate(cfg, Paths.project()), main.__doc__)


if __name__ == "__main__":
    main()
