"""Models and optimizers, built from the config by name.

Adding a model: a builder here registered in `BUILDERS`, its schema in `pipeline.config.MODELS`
and a YAML file in `conf/model/`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

# TensorFlow's C++ start-up banner (CPU features, oneDNN notes) buries the training log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402  (after the environment variable above)
from omegaconf import DictConfig  # noqa: E402

from pipeline.mnist import NUM_CLASSES  # noqa: E402
from pipeline.preprocess import FEATURES  # noqa: E402


def build_mlp(cfg: DictConfig) -> keras.Model:
    """The seed's network, generalised: Dense(units, activation) per entry, softmax on top."""
    layers: list[keras.layers.Layer] = [keras.Input(shape=(FEATURES,), name="pixels")]
    for units in cfg.model.hidden_units:
        layers.append(keras.layers.Dense(units, activation=cfg.activation.value))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="digit"))
    return keras.Sequential(layers, name="mlp")


BUILDERS: dict[str, Callable[[DictConfig], keras.Model]] = {"mlp": build_mlp}

OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "rmsprop": keras.optimizers.RMSprop,
    "adam": keras.optimizers.Adam,
    "sgd": keras.optimizers.SGD,
}


def build_optimizer(cfg: DictConfig) -> keras.optimizers.Optimizer:
    """The optimizer named by `cfg.optimizer.name`, with every other key as its argument."""
    kwargs = {k: v for k, v in cfg.optimizer.items() if k != "name"}
    return OPTIMIZERS[cfg.optimizer.name](**kwargs)


def build_model(cfg: DictConfig) -> keras.Model:
    """Build and compile the configured model, as the seed compiles it."""
    model = BUILDERS[cfg.model.name](cfg)
    model.compile(
        optimizer=build_optimizer(cfg),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model
