"""Models and optimizers by name: the registry the train stage builds from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import keras

from pipeline.models import cnn, mlp

BUILDERS = {"mlp": mlp.build, "cnn": cnn.build}
# Keras' class for each optimizer choice in conf/optimizer/.
OPTIMIZERS = {
    "rmsprop": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
}


def build_model(
    name: str,
    image_shape: tuple[int, ...],
    num_classes: int,
    activation: str,
    activation_args: Mapping[str, Any],
    **options: Any,
) -> keras.Model:
    """The uncompiled model `name`, with the model's own `options` (`hidden_units`, ...)."""
    return BUILDERS[name](image_shape, num_classes, activation, activation_args, **options)


def build_optimizer(
    name: str,
    learning_rate: float,
    schedule: str = "constant",
    total_steps: int | None = None,
    **options: Any,
) -> keras.optimizers.Optimizer:
    """The optimizer `name` with its `options` (`rho`, `momentum`, ...).

    Args:
        schedule: `constant`, or `cosine`: from `learning_rate` down to 0 over `total_steps`.
    """
    if schedule == "cosine":
        if not total_steps:
            raise ValueError("lr_schedule=cosine needs the number of training steps")
        learning_rate = keras.optimizers.schedules.CosineDecay(
            learning_rate, decay_steps=total_steps
        )
    return OPTIMIZERS[name](learning_rate=learning_rate, **options)


def compile_model(
    model: keras.Model, optimizer: keras.optimizers.Optimizer, steps_per_execution: int = 1
) -> keras.Model:
    """Compile as the seed does: categorical cross-entropy, accuracy.

    Args:
        steps_per_execution: Batches run per call into TensorFlow.
    """
    model.compile(
        optimizer=optimizer,
        loss="categorical_crossentropy",
        # What "accuracy" becomes for one-hot labels, made (with its variables) here.
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
    )
    # Variables made while the training step is traced make TensorFlow trace it twice, and each
    # trace's graph stays in TensorFlow's gradient registry for the process's life.
    optimizer.build(model.trainable_variables)
    return model
