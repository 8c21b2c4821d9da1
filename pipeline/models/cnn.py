"""A small convnet: per entry of `filters`, `convs_per_block` convolutions and 2x2
max-pooling; then one dense hidden layer, dropout and the softmax."""

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
    filters: list[int],
    convs_per_block: int,
    kernel_size: int,
    dense_units: int,
    dropout: float = 0.0,
    l2: float = 0.0,
    batch_norm: bool = False,
) -> keras.Model:
    """Takes the same flat pixels as the MLP, so preprocessing stays the seed's."""
    layer_args = {"l2": l2, "batch_norm": batch_norm}
    layers: list = [
        keras.Input(shape=(math.prod(image_shape),), name="pixels"),
        keras.layers.Reshape((*image_shape, 1)),  # back to images, inside the model
    ]
    for width in filters:
        for _ in range(convs_per_block):
            layers += hidden(
                keras.layers.Conv2D, width, activation, activation_args, spatial=True,
                kernel_size=kernel_size, padding="same", **layer_args,
            )  # fmt: skip
        layers.append(keras.layers.MaxPooling2D())
    layers.append(keras.layers.Flatten())
    layers += hidden(keras.layers.Dense, dense_units, activation, activation_args, **layer_args)
    if dropout:
        layers.append(keras.layers.Dropout(dropout))
    layers.append(keras.layers.Dense(num_classes, activation="softmax", name="digit"))
    return keras.Sequential(layers, name="cnn")
