"""Keras callbacks a training runs besides its scoring (pipeline.callbacks): the backup that
`train.resume` restarts from, and the points where a held signal may stop the training."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def epoch_backup(directory: Path) -> Any:
    """Keras' BackupAndRestore into `directory`, but saving only when told to (`save`): the
    epoch scoring saves it together with the epoch's logging."""
    import keras

    class EpochBackup(keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            pass  # saved by EpochScoring instead

        def save(self, epoch: int, logs: dict | None = None) -> None:
            super().on_epoch_end(epoch, logs)

    return EpochBackup(str(directory))


def between_calls(act: Callable[[], None]) -> Any:
    """A Keras callback that calls `act` wherever the training is between two calls into
    TensorFlow: as each epoch begins and after each call's steps."""
    import keras

    return keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: act(),
        on_train_batch_end=lambda batch, logs: act(),
    )
