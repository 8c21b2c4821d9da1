"""Models and optimizers, built from the config by name.

Each model is one module in this package that registers its schema and its builder under its
name with `register`; with a YAML file of the same name in `conf/model/`, that is all adding a
model takes. Modules here import Keras only inside their builders, so the config can be
validated (and DVC can compose it) without loading TensorFlow.

Every builder takes the prepared (N, 784) pixels, so preprocessing stays the seed's whatever
the architecture, and puts the configured activation after each hidden layer
(`pipeline.layers.hidden`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, DictConfig


@dataclass
class ModelConfig:
    """The keys every model's schema has; `pipeline.layers.hidden` reads the last three."""

    name: str = MISSING
    dropout: float = MISSING
    l2: float = MISSING
    batch_norm: bool = MISSING


@dataclass(frozen=True)
class ModelSpec:
    schema: type  # the dataclass that types and checks `model.*`
    build: Callable[[DictConfig], Any]  # config -> uncompiled keras.Model


MODELS: dict[str, ModelSpec] = {}


def register(name: str, schema: type) -> Callable:
    """Decorator: register `build` as model `name`, with `schema` for its config."""

    def add(build: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
        MODELS[name] = ModelSpec(schema, build)
        return build

    return add


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

# Keras' class for each optimizer choice in conf/optimizer/.
_OPTIMIZERS = {"rmsprop": "RMSprop", "adam": "Adam", "sgd": "SGD"}


def build_optimizer(cfg: DictConfig, total_steps: int | None = None):
    """The optimizer named by `cfg.optimizer.name`, with every other key as its argument.

    Args:
        total_steps: Training steps in all, over which `lr_schedule` moves the learning rate
            (required unless the schedule is constant).
    """
    import keras

    kwargs = {k: v for k, v in cfg.optimizer.items() if k != "name"}
    if cfg.lr_schedule.value == "cosine":
        if not total_steps:
            raise ValueError("lr_schedule=cosine needs the number of training steps")
        kwargs["learning_rate"] = keras.optimizers.schedules.CosineDecay(
            cfg.optimizer.learning_rate, decay_steps=total_steps
        )
    return getattr(keras.optimizers, _OPTIMIZERS[cfg.optimizer.name])(**kwargs)


def build_model(cfg: DictConfig, total_steps: int | None = None, steps_per_execution: int = 1):
    """Build and compile the configured model, as the seed compiles it.

    Args:
        total_steps: Training steps in all (epochs times batches), for the `lr_schedule`.
        steps_per_execution: Batches run per call into TensorFlow (Keras' `compile` argument).
    """
    model = MODELS[cfg.model.name].build(cfg)
    model.compile(
        optimizer=build_optimizer(cfg, total_steps),
        loss="categorical_crossentropy",
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model
