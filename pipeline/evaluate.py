"""Stage 4, evaluate: score the trained model on the rows it was fitted on, the validation
rows (with `val_split > 0`: `val_accuracy`, `val_loss`) and the test set, from the
class probabilities the train stage saved with it (`dvc repro evaluate`, or
`python -m pipeline.evaluate`).

Writes reports/metrics.json (the numbers `dvc metrics show` reads), per-class test accuracy
and the confusion matrix (DVC plots and a PNG), and logs the same numbers and files to the
MLflow run that trained the model, so DVC and MLflow agree. It needs no TensorFlow: the
predictions file says which model made it and on which data, and both are checked first.
"""

from __future__ import annotations

import csv
import json

import numpy as np
from omegaconf import DictConfig

from pipeline import plots, predictions
from pipeline.cli import run_stage
from pipeline.config import validate
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
from pipeline.io import atomic_path, write_json
from pipeline.paths import Paths
from pipeline.record import RETRAIN, RunRecord
from pipeline.tracking.runs import evaluation_files, log_to_run, per_class_key
from pipeline.tracking.store import experiment_id

# How many of the most confidently misclassified test images the gallery shows.
GALLERY = 24


def _labels(cfg: DictConfig, paths: Paths, probs: dict) -> dict[str, np.ndarray]:
    """The labels of each split the predictions are on (`train`: the rows fitted on, `test`,
    and `val` with a validation split), once each split's data digest is the one the
    predictions were made on."""
    (x_train, y_train), (_, y_test) = load_prepared(paths, "train"), load_prepared(paths, "test")
    # Training accuracy is of what the model was fitted on: without the validation split,
    # the first data.fit_samples (slices of the memory maps: nothing is read).
    val_split, fit_samples = cfg.val_split, cfg.data.fit_samples
    _, y_fit, _, y_val = split_validation(x_train, y_train, val_split, fit_samples)
    meta = read_meta(paths)
    labels = {"train": y_fit, "test": y_test}
    rows = {"train": (0, len(y_fit)), "test": (0, len(y_test))}
    if len(y_val) and "val" in probs:  # the training split's last rows
        labels["val"] = y_val
        rows["val"] = (len(y_train) - len(y_val), len(y_train))
    for split in labels:
        source = "train" if split == "val" else split
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
    return labels


def _checked(cfg: DictConfig, paths: Paths) -> tuple[RunRecord, dict, dict, np.ndarray]:
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
    labels = _labels(cfg, paths, probs)
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
    return run, probs, labels, load_prepared(paths, "test")[0]


def evaluate(
    cfg: DictConfig, paths: Paths | None = None, log: bool = True
) -> dict[str, float | str]:
    """Report on the predictions of the model in `paths.model`, write the reports and (with
    `log`) log them to the training run.

    Returns:
        The contents of reports/metrics.json (numbers, and `heldout`: the set `best_epoch`
        was found on).
    """
    cfg = validate(cfg)
    paths = (paths or Paths.project()).of(cfg.data.name)
    if log:  # the store first: one that cannot record fails here, before any work
        experiment_id(paths.root, cfg.tracking.experiment)
    run, probs, labels, test_x = _checked(cfg, paths)
    results = {}
    for split, y in labels.items():
        accuracy, loss = predictions.accuracy_and_loss(probs[split.removesuffix("_clean")], y)
        results[split] = {"accuracy": accuracy, "loss": loss}
    test_probs = probs["test"]
    truth = np.asarray(labels["test"]).argmax(axis=1)
    predicted = test_probs.argmax(axis=1)
    names = list(cfg.data.classes)
    matrix = predictions.confusion_matrix(truth, predicted, len(names))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(axis=1), 1)

    # `train_*` are on the labels the model was fitted on; with label noise, `train_clean_*`
    # are on the true ones.
    metrics = {
        f"{split}_{name}": round(value, 6)
        for split in labels
        for name, value in results[split].items()
    }
    metrics["generalization_gap"] = round(metrics["train_accuracy"] - metrics["test_accuracy"], 6)
    # Where overfitting began, from the training's per-epoch held-out loss (the run record),
    # and on which held-out set: DVC's metrics say what the MLflow run does.
    fitted = {k: run.metrics[k] for k in ("best_epoch", "epochs_past_best", "heldout_loss_rise")}
    report = {**metrics, **fitted, "heldout": run.tags["heldout"]}
    write_json(paths.metrics, report)
    with atomic_path(paths.per_class) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["class", "test_accuracy"])
        writer.writerows([name, f"{acc:.6f}"] for name, acc in zip(names, per_class, strict=True))
    with atomic_path(paths.confusion) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["actual", "predicted"])
        pairs = zip(truth.tolist(), predicted.tolist(), strict=True)
        writer.writerows([names[t], names[p]] for t, p in pairs)
    title = f"{run.run_name}: test accuracy {metrics['test_accuracy']:.4f}"
    plots.confusion_matrix(matrix, names, paths.confusion_plot, title)
    wrong = np.flatnonzero(predicted != truth)
    confidence = test_probs[wrong, predicted[wrong]]
    worst = wrong[np.argsort(-confidence)][:GALLERY]
    plots.misclassified_gallery(
        np.asarray(test_x[worst]).reshape(-1, *image_shape(paths)),
        [names[t] for t in truth[worst].tolist()], [names[p] for p in predicted[worst].tolist()],
        test_probs[worst, predicted[worst]], paths.misclassified_plot,
    )  # fmt: skip

    if log:
        per_class_metrics = {per_class_key(i): float(a) for i, a in enumerate(per_class)}
        log_to_run(
            paths.root, cfg.tracking.experiment, run.to_dict(), {**metrics, **per_class_metrics},
            evaluation_files(paths),
        )  # fmt: skip
    print(json.dumps(report))
    return report


def main() -> None:
    """Report on models/model.keras' predictions; write reports/metrics.json."""
    run_stage(lambda cfg: evaluate(cfg, Paths.project()), main.__doc__)


if __name__ == "__main__":
    main()
