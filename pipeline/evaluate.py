"""Stage 4, evaluate: score the saved model on the full training and test sets.

Writes reports/metrics.json (the numbers `dvc metrics show` reads), per-digit test accuracy
and the confusion matrix (DVC plots and a PNG), and logs the same numbers and files to the
MLflow run that trained the model, so DVC and MLflow agree.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from pipeline import plots, tracking
from pipeline.config import PipelineError, validate
from pipeline.io import atomic_path, write_json
from pipeline.mnist import NUM_CLASSES
from pipeline.paths import Paths
from pipeline.preprocess import as_tensors, load_prepared, read_aligned, split_validation

# Scoring has no gradients to hold, so a big batch is only faster.
EVAL_BATCH = 2048
# Keras' categorical cross-entropy clips probabilities to this epsilon before the log.
_EPSILON = 1e-7


# How many of the most confidently misclassified test digits the gallery shows.
GALLERY = 24


def score(model, x: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Accuracy, cross-entropy loss and the class probabilities, from one pass of predictions."""
    # Calling the model batch by batch gives what `predict` gives, bit for bit, without
    # compiling a prediction function first (0.6 s, more than the predictions take).
    probs = np.concatenate(
        [model(x[i : i + EVAL_BATCH], training=False).numpy() for i in range(0, len(x), EVAL_BATCH)]
    )
    probs = probs / probs.sum(axis=1, keepdims=True)
    truth = np.asarray(y).argmax(axis=1)
    p_true = np.clip(probs[np.arange(len(truth)), truth], _EPSILON, 1 - _EPSILON)
    return float((probs.argmax(axis=1) == truth).mean()), float(-np.log(p_true).mean()), probs


class ModelError(PipelineError):
    """The saved model cannot be loaded safely."""


def load_model(path: Path):
    """Load a saved model with Keras' safe_mode, which refuses arbitrary code (Lambda layers).

    Raises:
        ModelError: the file is missing, damaged, or carries code.
    """
    import pipeline.layers  # noqa: F401  (registers the custom layers the model may hold)
    from pipeline.backend import keras

    if not path.is_file():
        raise ModelError(f"no model at {path}; run the train stage first")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError) as err:
        reason = str(err).split("\n")[0]
        raise ModelError(f"refusing to load {path}: {reason}") from None


def evaluate(cfg: DictConfig, paths: Paths | None = None) -> dict[str, float]:
    """Evaluate `paths.model`, write the reports and log them to the training run.

    Returns:
        The contents of reports/metrics.json.
    """
    cfg = validate(cfg)
    paths = paths or Paths.project()
    # MLflow is started now, beside the scoring, and logs the reports once they are written.
    with tracking.RunLogger(paths.root) as logger:
        run, metrics, per_digit = _score_and_report(cfg, paths)
        logger.log(
            run,
            {**metrics, **per_digit},
            [(paths.metrics, None), (paths.per_class, None), (paths.confusion, None),
             (paths.confusion_plot, "plots"), (paths.misclassified_plot, "plots")],
        )  # fmt: skip
    print(json.dumps(metrics))
    return metrics


def _score_and_report(
    cfg: DictConfig, paths: Paths
) -> tuple[dict[str, str], dict[str, float], dict[str, float]]:
    """Score the model and write the reports.

    Returns:
        The training run (models/run.json), metrics.json's metrics, test accuracy per digit.
    """
    model = load_model(paths.model)
    run = json.loads(paths.run_info.read_text())  # written with the model
    # Training accuracy is measured on what the model was fitted on: without the validation
    # split when there is one.
    (train_x, y_train), (test_x, y_test) = (
        load_prepared(paths, "train"),
        load_prepared(paths, "test"),
    )
    x_train, x_test = as_tensors(read_aligned(train_x, test_x))
    x_fit, y_fit, _, _ = split_validation(x_train, y_train, cfg.val_split)
    results = {}
    for split, (x, y) in {"train": (x_fit, y_fit), "test": (x_test, y_test)}.items():
        accuracy, loss, probs = score(model, x, y)
        results[split] = {"accuracy": accuracy, "loss": loss}
    truth = y_test.argmax(axis=1)  # `probs` are the test split's, scored last
    predicted = probs.argmax(axis=1)
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
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
        writer.writerow(["digit", "test_accuracy"])
        writer.writerows([d, f"{acc:.6f}"] for d, acc in enumerate(per_class))
    with atomic_path(paths.confusion) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        writer.writerows(zip(truth.tolist(), predicted.tolist(), strict=True))
    title = f"{run['run_name']}: test accuracy {metrics['test_accuracy']:.4f}"
    plots.confusion_matrix(matrix, paths.confusion_plot, title)
    wrong = np.flatnonzero(predicted != truth)
    confidence = probs[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence)][:GALLERY]
    plots.misclassified_gallery(
        np.asarray(test_x[worst]), truth[worst], predicted[worst],
        probs[worst, predicted[worst]], paths.misclassified_plot,
    )  # fmt: skip
    return run, metrics, {f"test_accuracy_digit_{d}": float(a) for d, a in enumerate(per_class)}


def main() -> None:
    """Evaluate models/model.keras on the prepared data; write reports/metrics.json."""
    from pipeline.cli import run_stage

    run_stage(lambda cfg: evaluate(cfg, Paths.project()), main.__doc__)


if __name__ == "__main__":
    from pipeline.cli import run

    run(main)
