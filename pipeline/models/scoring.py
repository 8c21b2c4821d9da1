"""Using a model on prepared arrays: as tensors, loaded safely, scored.

The train stage scores the test set with `probabilities` after every epoch, and its final
model on the training and test sets (the predictions the evaluate stage reports on).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from pipeline.errors import ModelError
from pipeline.models import layers  # noqa: F401  (registers Maxout, which saved models may hold)

# Scoring has no gradients to hold, so a big batch is only faster.
EVAL_BATCH = 2048


def as_tensors(arrays: list[np.ndarray]) -> list[tf.Tensor]:
    """Arrays from `pipeline.data.prepared.read_aligned` as tensors that take their memory
    over (DLPack): TensorFlow's own conversion of a NumPy array keeps two more copies."""
    return [tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in arrays]


def probabilities(model: keras.Model, x) -> np.ndarray:
    """The model's class probabilities for `x`, rows summing to 1 (see
    `pipeline.predictions.accuracy_and_loss` for the scores they give)."""
    # Calling the model batch by batch gives what `predict` gives, bit for bit, without
    # compiling a prediction function first (0.6 s, more than the predictions take).
    probs = np.concatenate(
        [model(x[i : i + EVAL_BATCH], training=False).numpy() for i in range(0, len(x), EVAL_BATCH)]
    )
    return probs / probs.sum(axis=1, keepdims=True)


def load_model(path: Path) -> keras.Model:
    """Load a saved model with Keras' safe_mode, which refuses arbitrary code (Lambda layers).

    Raises:
        ModelError: the file is missing, damaged, or carries code.
    """
    if not path.is_file():
        raise ModelError(f"no model at {path}; run the train stage first")
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except (ValueError, OSError) as err:
        reason = str(err).split("\n")[0]
        raise ModelError(f"refusing to load {path}: {reason}") from None
