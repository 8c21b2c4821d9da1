"""Keras callbacks a training runs besides its scoring (pipeline.callbacks): the backup that
`train.resume` restarts from, and the stop of a training that a signal interrupts."""

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

    # Kept when `fit` ends early on a signal; a completed run drops it (pipeline.resume).
    return EpochBackup(str(directory), delete_checkpoint=False)


def stop_when(pending: Callable[[], bool]) -> Any:
    """A Keras callback that stops the training the way Keras' own callbacks do, by setting
    `model.stop_training`, once `pending()` is true: after the running call into TensorFlow
    (at most `steps_per_execution` batches), `fit` returns as it does at its end."""
    import keras

    class StopWhen(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if pending():
                self.model.stop_training = True

    return StopWhen()
