"""A saved model as MLflow's `python_function` flavor loads it, from any directory.

Each run logs its model with this module as the flavor's loader and the `pipeline` package as
its code (`code_paths`), so `mlflow.pyfunc.load_model`, `mlflow models predict` and `mlflow
models serve` import the custom layers (Maxout) before Keras reads the file: a plain Keras
model logged without its code fails elsewhere with `Could not locate class 'Maxout'`.

The model takes images as the pipeline prepares them: rows of height x width pixels in [0, 1]
(28 x 28 = 784 for MNIST), light on dark. `(N, 28, 28)` arrays are accepted too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

# The model file inside the logged model's data directory.
MODEL_FILE = "model.keras"


class Classifier:
    """What `mlflow.pyfunc.load_model` returns the `predict` of: class probabilities."""

    def __init__(self, path: Path) -> None:
        from pipeline.models.scoring import load_model  # registers the custom layers

        self.model = load_model(path)
        self.pixels = int(np.prod(self.model.input_shape[1:]))

    def predict(self, model_input: Any, params: dict | None = None) -> np.ndarray:
        """(N, pixels) or (N, height, width) images in [0, 1] -> (N, classes) probabilities."""
        from pipeline.models.scoring import probabilities

        x = np.asarray(model_input, dtype=np.float32).reshape(-1, self.pixels)
        return probabilities(self.model, x)


def _load_pyfunc(data_path: str) -> Classifier:
    """MLflow's entry point for the flavor (`loader_module`): the logged data directory."""
    path = Path(data_path)
    return Classifier(path / MODEL_FILE if path.is_dir() else path)
