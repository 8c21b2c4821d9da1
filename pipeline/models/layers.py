"""Building blocks the models share: a hidden layer with its activation, and the Maxout layer
Keras lacks. How each activation is built comes from the table in `pipeline.activations`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras

from pipeline.activations import ACTIVATIONS


@keras.saving.register_keras_serializable(package="mnist_pipeline")
class Maxout(keras.layers.Layer):
    """Maxout (Goodfellow et al., 2013): each unit is the max of `pieces` linear pieces.

    Follows a linear layer with `units * pieces` outputs; groups each `pieces` consecutive
    features of the last axis and keeps their maximum, leaving `units` features. Registered
    with Keras, so a saved model reloads with `safe_mode=True` once this module is imported.
    """

    def __init__(self, pieces: int = 2, **kwargs) -> None:
        super().__init__(**kwargs)
        if pieces < 2:
            raise ValueError(f"Maxout needs at least 2 pieces, got {pieces}")
        self.pieces = pieces

    def call(self, inputs):
        *inner, features = inputs.shape[1:]
        grouped = keras.ops.reshape(inputs, (-1, *inner, features // self.pieces, self.pieces))
        return keras.ops.max(grouped, axis=-1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (*input_shape[:-1], input_shape[-1] // self.pieces)

    def get_config(self) -> dict:
        return {**super().get_config(), "pieces": self.pieces}


# The project's own layers, by the name the activation table gives.
_CUSTOM_LAYERS = {"Maxout": Maxout}


def activation_layer(name: str, args: Mapping[str, Any], spatial: bool) -> keras.layers.Layer:
    """Activation `name` (a key of the table) as a layer of its own, with its arguments."""
    entry = ACTIVATIONS[name]
    if entry.layer is None:
        return keras.layers.Activation(name)
    kwargs = {a.name: args[a.name] for a in entry.args}
    if spatial:
        kwargs.update(entry.spatial)
    layer = _CUSTOM_LAYERS.get(entry.layer) or getattr(keras.layers, entry.layer)
    return layer(**kwargs)


def hidden(
    layer: Callable[..., keras.layers.Layer],
    width: int,
    activation: str,
    activation_args: Mapping[str, Any],
    *,
    l2: float = 0.0,
    batch_norm: bool = False,
    spatial: bool = False,
    **kwargs: Any,
) -> list[keras.layers.Layer]:
    """A hidden layer (`Dense` or `Conv2D` with `width` units) and its activation.

    Uses the layer's own `activation=` for Keras' functions, which keeps the seed's network
    exactly the seed's; batch normalization goes between the linear part and the activation.
    """
    entry = ACTIVATIONS[activation]
    kwargs["kernel_regularizer"] = keras.regularizers.L2(l2) if l2 else None
    if batch_norm:
        kwargs["use_bias"] = False  # the normalization's offset does the bias's job
    elif entry.layer is None:
        return [layer(width, activation=activation, **kwargs)]
    if entry.widen_by:
        width *= activation_args[entry.widen_by]
    layers = [layer(width, **kwargs)]
    if batch_norm:
        # Keras' default momentum (0.99) needs hundreds of steps before the statistics used
        # at inference settle; 0.9 (PyTorch's) serves short runs too.
        layers.append(keras.layers.BatchNormalization(momentum=0.9))
    layers.append(activation_layer(activation, activation_args, spatial))
    return layers
