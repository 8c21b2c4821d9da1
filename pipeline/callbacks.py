"""What a training measures each epoch: the training subset and the test set scored with the
epoch's final weights, the gaps between them, all logged to MLflow as `epoch/<name>` (the
train stage runs `EpochScoring.on_epoch_end` as a Keras callback), and where overfitting began.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline import predictions
from pipeline.errors import DivergedError
from pipeline.tracking.runs import log_metrics

# Training images scored with each epoch's final weights, as the test set is: Keras' per-epoch
# `accuracy` averages over weights that change. 10,000 images give it to about +-0.1%.
TRAIN_SCORED = 10_000
# Keras' running values, renamed: `train_loss` and `train_accuracy` are the scored ones.
_RUNNING = {"loss": "train_running_loss", "accuracy": "train_running_accuracy"}


def history_name(keras_name: str) -> str:
    """An epoch metric's name in the history and in MLflow (`epoch/<name>`): Keras' running
    `loss` and `accuracy` become `train_running_*`; every other name is already its split's."""
    return _RUNNING.get(keras_name, keras_name)


def heldout_set(cfg: DictConfig) -> str:
    """Where a run's overfitting is measured: `val` (validation) when `val_split > 0`, else
    `test`, the prefix of its epoch metrics."""
    return "val" if cfg.val_split > 0 else "test"


def overfitting(history: dict[str, list[float]], heldout: str) -> dict[str, float]:
    """Where overfitting began: `best_epoch` (from 1), the epoch of the lowest held-out loss;
    `epochs_past_best`, the epochs trained after it; `heldout_loss_rise`, how far the held-out
    loss rose from its lowest to the last epoch."""
    losses = history[f"{heldout}_loss"]
    best = min(range(len(losses)), key=losses.__getitem__)  # the first, on a tie
    return {
        "best_epoch": best + 1,
        "epochs_past_best": len(losses) - 1 - best,
        "heldout_loss_rise": losses[-1] - losses[best],
    }


class EpochScoring:
    """Scores the training subset and the test set with the weights each epoch ends with,
    adds the scores and the gaps to the epoch's logs (and so to the History), and logs
    every epoch metric to MLflow as `epoch/<name>`, step = epoch (from 1).

    Names: `train_*` (the subset, on the labels fitted on), `train_clean_*` (on the
    true labels, with label noise), `test_*`, Keras' `val_*`, `train_running_*` (Keras'
    running averages), and `generalization_gap` (train minus held-out accuracy) and
    `loss_gap` (held-out minus train loss): overfitting is where these grow.

    Args:
        train: A fixed subset of the fitted images with the labels fitted on and (with label
            noise) the clean ones.
        test: The test images and labels; None for a search's trial, which never reads
            the test set (its `test_*` are then not scored).
    """

    def __init__(
        self,
        model: Any,
        train: tuple[Any, np.ndarray, np.ndarray | None],
        test: tuple[Any, np.ndarray] | None,
        heldout: str,
    ) -> None:
        from pipeline.models.scoring import probabilities

        self._probabilities = probabilities
        self.model, self.train, self.test, self.heldout = model, train, test, heldout
        # Seconds spent scoring, over all epochs: measurement, not training (the run record's
        # `epoch_scoring_seconds`).
        self.seconds = 0.0
        # The backup of the last completed epoch (for `train.resume`), if kept: written here,
        # with the epoch's logging, so that an interruption never leaves one without the other.
        self.backup: Any = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        start = time.perf_counter()
        logs = logs if logs is not None else {}
        if not math.isfinite(logs.get("loss", 0.0)):
            # Nothing more can be learnt; stop, and fail the run with the reason.
            raise DivergedError(f"loss became NaN at epoch {epoch + 1}")
        self._score(logs)
        self.seconds += time.perf_counter() - start
        metrics = {f"epoch/{history_name(k)}": float(v) for k, v in logs.items()}
        # An epoch backed up is an epoch in the run, and the other way round (a signal is
        # held during `fit`: pipeline.fit): a resume continues having lost none.
        if self.backup is not None:
            self.backup.save(epoch, logs)
        log_metrics(metrics, step=epoch + 1, wait=False)

    def _score(self, logs: dict) -> None:
        """Add the epoch's scores and gaps to `logs`."""
        x_train, y_train, y_clean = self.train
        # Scored as evaluate scores, batch by batch: Keras' own `evaluate` spent more time
        # building its dataset and prediction function each epoch than scoring.
        probs = self._probabilities(self.model, x_train)
        logs["train_accuracy"], logs["train_loss"] = predictions.accuracy_and_loss(probs, y_train)
        if y_clean is not None:
            scores = predictions.accuracy_and_loss(probs, y_clean)
            logs["train_clean_accuracy"], logs["train_clean_loss"] = scores
        if self.test is not None:
            x_test, y_test = self.test
            scores = predictions.accuracy_and_loss(self._probabilities(self.model, x_test), y_test)
            logs["test_accuracy"], logs["test_loss"] = scores
        heldout = self.heldout
        logs["generalization_gap"] = logs["train_accuracy"] - logs[f"{heldout}_accuracy"]
        logs["loss_gap"] = logs[f"{heldout}_loss"] - logs["train_loss"]
