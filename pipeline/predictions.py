"""A trained model's class probabilities on the prepared splits, and the scores they give.

The train stage scores its final model on the rows it was fitted on, on the validation rows
(with `val_split > 0`) and on the test set, and saves the probabilities
(models/predictions.npz) with what identifies them: the MLflow run, the checksum of the model
file that made them, and each split's data digest. The evaluate stage computes every report
from that file with NumPy alone: it starts without TensorFlow, so re-running it after a
change to the reports costs seconds, not a model load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.errors import DataError
from pipeline.io import atomic_path

# Keras' categorical cross-entropy clips probabilities to this epsilon before the log.
EPSILON = 1e-7
SPLITS = ("train",)
# `test` unless a search's trial made them (it never reads the test set); `val` when the run
# held out validation rows.
OPTIONAL = ("test", "val")


def accuracy_and_loss(probs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """Accuracy and mean categorical cross-entropy (as Keras computes it) of class
    probabilities against one-hot targets."""
    truth = np.asarray(targets).argmax(axis=1)
    p_true = np.clip(probs[np.arange(len(truth)), truth], EPSILON, 1 - EPSILON)
    return float((probs.argmax(axis=1) == truth).mean()), float(-np.log(p_true).mean())


def test_halves(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows of half A and half B of a test set of `n` images: the even-numbered and the
    odd-numbered ones. Not the first and last 5,000: MNIST's first 5,000 test digits are
    cleaner and easier than its last (LeCun's note), and each half must be like the other."""
    rows = np.arange(n)
    return rows[0::2], rows[1::2]


def half_accuracies(probs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """`test_a_accuracy` and `test_b_accuracy`: the test accuracy on each half."""
    correct = probs.argmax(axis=1) == np.asarray(targets).argmax(axis=1)
    a, b = test_halves(len(correct))
    return {
        "test_a_accuracy": float(correct[a].mean()),
        "test_b_accuracy": float(correct[b].mean()),
    }


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """Counts of (actual, predicted) class pairs: rows actual, columns predicted."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (truth, predicted), 1)
    return matrix


def save(
    path: Path,
    run_id: str,
    model_sha256: str,
    splits: dict[str, tuple[np.ndarray, str]],
    label_noise: tuple[float, int] = (0.0, 0),
) -> None:
    """Write the probabilities of each split (`{split: (probs, data digest)}`), atomically,
    with the label noise the training labels had: `(fraction, seed)` (pipeline.data.noise)."""
    arrays = {
        "run_id": np.array(run_id),
        "model_sha256": np.array(model_sha256),
        "label_noise": np.array(label_noise[0], np.float64),
        "noise_seed": np.array(label_noise[1], np.int64),
    }
    for split, (probs, digest) in splits.items():
        arrays[split] = np.asarray(probs, np.float32)
        arrays[f"{split}_digest"] = np.array(digest)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def load(path: Path) -> dict[str, np.ndarray | str]:
    """The file `save` wrote: `run_id`, `model_sha256`, per split its probabilities and
    `<split>_digest` (`test` unless a search's trial, `val` only when the run had validation
    rows), and `label_noise`
    (float) and `noise_seed` (int).

    Raises:
        DataError: the file is missing or not what the train stage writes.
    """
    numbers = {"label_noise": float, "noise_seed": int}
    keys = {"run_id", "model_sha256", *SPLITS, *(f"{s}_digest" for s in SPLITS), *numbers}
    arrays = (*SPLITS, *OPTIONAL)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if missing := keys - set(archive.files):
                raise ValueError(f"missing {', '.join(sorted(missing))}")
            present = keys | {k for s in OPTIONAL for k in (s, f"{s}_digest") if s in archive}
            return {
                k: archive[k] if k in arrays else numbers.get(k, str)(archive[k]) for k in present
            }
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {path} ({err}); run the train stage first") from None
