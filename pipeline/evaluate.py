"""Stage 4, evaluate: score the trained model on the rows it was fitted on, the validation
rows (with `val_split > 0`: `val_accuracy`, `val_loss`) and the test set, from the
class probabilities the train stage saved with it (`dvc repro evaluate`, or
`python -m pipeline.evaluate`).

Writes reports/metrics.json (the numbers `dvc metrics show` reads), per-class test accuracy
and the confusion matrix (DVC plots and a PNG), and logs the same numbers and files to the
MLflow run that trained the model, so DVC and MLflow agree (MLflow also gets the accuracy of
each class and of each half of the test set, `test_a_accuracy` and `test_b_accuracy`). It
needs no TensorFlow: the predictions file says which model made it and on which data, and
both are checked first.
"""

from __future__ import annotations

import json

import numpy as np
from omegaconf import DictConfig

from pipeline import plots, predictions
from pipeline.cli import run_stage
from pipeline.config import sees_test_set, validate
from pipeline.data.idx import file_sha256
from pipeline.data.noise import relabel
from pipeline.data.prepared import (
    image_shape,
    load_prepared,
    read_meta,
    split_digest,
    split_validation,
)
from pipeline.errors import DataError, ModelError
from pipeline.io import write_csv, write_json
from pipeline.paths import Paths
from pipeline.record import RETRAIN, RunRecord
from pipeline.tracking.runs import evaluation_files, log_to_run, per_class_key
from pipeline.tracking.store import Store, connect

# How many of the most confidently misclassified test images the gallery shows.
GALLERY = 24


def _labels(
    cfg: DictConfig, paths: Paths, probs: dict
) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The labels of each split the predictions are on (`train`: the rows fitted on, `test`
    unless a search's trial, and `val` with a validation split), once each split's data
    digest is the one the predictions were made on; and the test images (if read)."""
    x_train, y_train = load_prepared(paths, "train")
    x_test, y_test = load_prepared(paths, "test") if sees_test_set(cfg) else (None, None)
    # Training accuracy is of what the model was fitted on: without the validation split,
    # the first data.fit_samples (slices of the memory maps: nothing is read).
    val_split, fit_samples = cfg.val_split, cfg.data.fit_samples
    _, y_fit, _, y_val = split_validation(x_train, y_train, val_split, fit_samples)
    meta = read_meta(paths)
    labels, rows = {"train": y_fit}, {"train": (0, len(y_fit))}
    if y_test is not None:
        labels["test"], rows["test"] = y_test, (0, len(y_test))
    if len(y_val) and "val" in probs:  # the training split's last rows
        labels["val"] = y_val
        rows["val"] = (len(y_train) - len(y_val), len(y_train))
    for split in labels:
        source = "train" if split == "val" else split
        if split == "test" and "test" not in probs:
            raise DataError(f"{paths.predictions} holds no predictions on the test set; {RETRAIN}")
        if probs[f"{split}_digest"] != split_digest(meta, source, *rows[split]):
            raise DataError(
                f"{paths.predictions} holds predictions on other {split} data than "
                f"{paths.prepared} with val_split={val_split} and data.fit_samples="
                f"{fit_samples}; {RETRAIN}"
            )
    if len(y_val) and "val" not in probs:
        raise DataError(
            f"{paths.predictions} holds no predictions on the validation rows that "
            f"val_split={val_split} holds out; {RETRAIN}"
        )
    return labels, x_test


def _checked(cfg: DictConfig, paths: Paths) -> tuple[RunRecord, dict, dict, np.ndarray | None]:
    """The run record, the predictions, the labels of each split and the test images, once
    each is known to belong with the others: the predictions were made by this run's model
    file, on these data, with these labels.

    The labels are `train` (those fitted on), `test`, with `val_split > 0` `val`, and with
    label noise `train_clean`."""
    if not paths.model.is_file():
        raise ModelError(f"no model at {paths.model}; {RETRAIN}")
    run = RunRecord.load(paths.run_info)  # written with the model
    probs = predictions.load(paths.predictions)
    if probs["run_id"] != run.run_id:
        raise ModelError(
            f"{paths.predictions} was made by MLflow run {probs['run_id']}, not by run "
            f"{run.run_id} that {paths.run_info} names; {RETRAIN}"
        )
    if file_sha256(paths.model) != run.model_sha256:
        raise ModelError(
            f"{paths.model} is not the model MLflow run {run.run_id} trained (its checksum "
            f"differs from the one the run recorded); {RETRAIN}"
        )
    labels, test_x = _labels(cfg, paths, probs)
    noise = cfg.data.label_noise
    if (probs["label_noise"], probs["noise_seed"] if noise else None) != (
        noise,
        cfg.seed if noise else None,
    ):
        raise DataError(
            f"{paths.predictions} was trained with data.label_noise={probs['label_noise']} "
            f"(seed {probs['noise_seed']}), not data.label_noise={noise} (seed {cfg.seed}); "
            f"{RETRAIN}"
        )
    if noise:  # the same labels the train stage fitted on: the same fraction, the same seed
        labels["train_clean"] = labels["train"]
        labels["train"] = relabel(np.asarray(labels["train"]), noise, cfg.seed)[0]
    return run, probs, labels, test_x


def evaluate(
    cfg: DictConfig, paths: Paths | None = None, log: bool = True, store: Store | None = None
) -> dict[str, float | str]:
    """Report on the predictions of the model in `paths.model`, write the reports and (with
    `log`) log them to the training run, in `store` (default: checked here).

    Returns:
        The contents of reports/metrics.json (numbers, and `heldout`: the set `best_epoch`
        was found on).
    """
    cfg = validate(cfg)
    paths = (paths or Paths.project()).of(cfg.data.name)
    if log and store is None:  # the store first: one that cannot record fails here, at once
        store = connect(paths.root, cfg.tracking.experiment)
    run, probs, labels, test_x = _checked(cfg, paths)
    metrics = _scores(probs, labels)
    tested = "test" in labels
    # Where overfitting began, from the training's per-epoch held-out loss (the run record),
    # and on which held-out set: DVC's metrics say what the MLflow run does.
    fitted = {k: run.metrics[k] for k in ("best_epoch", "epochs_past_best", "heldout_loss_rise")}
    report = {**metrics, **fitted, "heldout": run.tags["heldout"]}
    write_json(paths.metrics, report)
    per_class = []
    if tested:
        truth = np.asarray(labels["test"]).argmax(axis=1)
        per_class = _test_reports(cfg, paths, run, probs["test"], truth, test_x)
    if log:
        per_class_metrics = {per_class_key(i): float(a) for i, a in enumerate(per_class)}
        # Each half of the test set on its own (the selection study picks on one, scores on
        # the other): MLflow only, like the per-class scores.
        halves = predictions.half_accuracies(probs["test"], labels["test"]) if tested else {}
        scores = {**metrics, **per_class_metrics, **halves}
        files = evaluation_files(paths, tested)
        log_to_run(store, run.to_dict(), scores, files)
    print(json.dumps(report))
    return report


def _scores(probs: dict, labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy and loss on each split, and the gap. `train_*` are on the labels the model
    was fitted on; with label noise, `train_clean_*` are on the true ones."""
    metrics = {}
    for split, y in labels.items():
        accuracy, loss = predictions.accuracy_and_loss(probs[split.removesuffix("_clean")], y)
        metrics[f"{split}_accuracy"], metrics[f"{split}_loss"] = round(accuracy, 6), round(loss, 6)
    if "test_accuracy" in metrics:  # not for a search's trial, which reads no test set
        gap = metrics["train_accuracy"] - metrics["test_accuracy"]
        metrics["generalization_gap"] = round(gap, 6)
    return metrics


def _test_reports(
    cfg: DictConfig,
    paths: Paths,
    run: RunRecord,
    probs: np.ndarray,
    truth: np.ndarray,
    images: np.ndarray,
) -> np.ndarray:
    """Per-class accuracy and the confusion matrix as CSV and plots, and the most confidently
    misclassified test images; return the per-class accuracy."""
    predicted = probs.argmax(axis=1)
    names = list(cfg.data.classes)
    matrix = predictions.confusion_matrix(truth, predicted, len(names))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)
    rows = ([name, f"{acc:.6f}"] for name, acc in zip(names, per_class, strict=True))
    write_csv(paths.per_class, ["class", "test_accuracy"], rows)
    pairs = zip(truth.tolist(), predicted.tolist(), strict=True)
    write_csv(paths.confusion, ["actual", "predicted"], ([names[t], names[p]] for t, p in pairs))
    accuracy = (predicted == truth).mean()
    title = f"{run.run_name}: test accuracy {accuracy:.4f}"
    plots.confusion_matrix(matrix, names, paths.confusion_plot, title)
    wrong = np.flatnonzero(predicted != truth)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:GALLERY]
    plots.misclassified_gallery(
        np.asarray(images[worst]).reshape(-1, *image_shape(paths)),
        [names[t] for t in truth[worst].tolist()],
        [names[p] for p in predicted[worst].tolist()],
        probs[worst, predicted[worst]],
        paths.misclassified_plot,
    )
    return per_class


def main() -> None:
    """Report on models/model.keras' predictions; write reports/metrics.json."""
    run_stage(lambda cfg: evaluate(cfg, Paths.project()), main.__doc__)


if __name__ == "__main__":
    main()
