"""Building blocks shared by the models: the configured activation after a hidden layer, and
the Maxout layer Keras lacks."""

from __future__ import annotations

from collections.abc import Callable

from omegaconf import DictConfig

from pipeline.backend import keras

# Activations that need a layer of their own: an argument, or weights.
_LAYER_ACTIVATIONS = ("leaky_relu", "elu", "prelu", "maxout")


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


def activation_layer(cfg: DictConfig, spatial: bool) -> keras.layers.Layer:
    """The configured activation as a layer of its own."""
    name, args = cfg.activation.value, cfg.activation_args
    if name == "leaky_relu":
        return keras.layers.LeakyReLU(negative_slope=args.negative_slope)
    if name == "elu":
        return keras.layers.ELU(alpha=args.alpha)
    if name == "prelu":
        # One learned slope per channel, shared across positions, as in He et al. (2015).
        return keras.layers.PReLU(shared_axes=[1, 2] if spatial else None)
    if name == "maxout":
        return Maxout(args.pieces)
    return keras.layers.Activation(name)


def hidden(
    layer: Callable[..., keras.layers.Layer],
    width: int,
    cfg: DictConfig,
    *,
    spatial: bool = False,
    **kwargs,
) -> list[keras.layers.Layer]:
    """A hidden layer (`Dense` or `Conv2D` with `width` units) and its activation.

    Uses the layer's own `activation=` where possible, which keeps the seed's network exactly
    the seed's; batch normalization goes between the linear part and the activation. Reads
    `cfg.model.l2` and `cfg.model.batch_norm`, which every model's schema has (`ModelConfig`).
    """
    name = cfg.activation.value
    l2 = cfg.model.l2
    kwargs["kernel_regularizer"] = keras.regularizers.L2(l2) if l2 else None
    if cfg.model.batch_norm:
        kwargs["use_bias"] = False  # the normalization's offset does the bias's job
    elif name not in _LAYER_ACTIVATIONS:
        return [layer(width, activation=name, **kwargs)]
    if name == "maxout":
        width *= cfg.activation_args.pieces
    layers = [layer(width, **kwargs)]
    if cfg.model.batch_norm:
        # Keras' default momentum (0.99) needs hundreds of steps before the statistics used
        # at inference settle; 0.9 (PyTorch's) serves short runs too.
        layers.append(keras.layers.BatchNormalization(momentum=0.9))
    layers.append(activation_layer(cfg, spatial))
    return layers
