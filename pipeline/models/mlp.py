"""The seed's network, generalised: a hidden Dense block per entry of `hidden_units`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras

from pipeline.models.layers import hidden


def build(
    image_shape: tuple[int, ...],
    num_classes: int,
    activation: str,
    activation_args: Mapping[str, Any],
    *,
    hidden_units: list[int],
    dropout: float = 0.0,
    l2: float = 0.0,
    batch_norm: bool = False,
) -> keras.Model:
    """Flat pixels -> a Dense(units) + activation per entry of `hidden_units` -> softmax."""
    layers: list = [keras.Input(shape=(math.prod(image_shape),), name="pixels")]
    for units in hidden_units:
        layers += hidden(
            keras.layers.Dense, units, activation, activation_args, l2=l2, batch_norm=batch_norm
        )
        if dropout:
            layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="digit"))
    return keras.Sequential(layers, name="mlp")
