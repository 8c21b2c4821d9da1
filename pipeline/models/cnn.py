"""A small convnet: per entry of `filters`, `convs_per_block` convolutions and 2x2
max-pooling; then one dense hidden layer, dropout and the softmax."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from pipeline.models import ModelConfig, register


@dataclass
class CNNConfig(ModelConfig):
    filters: list[int] = MISSING
    convs_per_block: int = MISSING
    kernel_size: int = MISSING
    dense_units: int = MISSING


@register("cnn", CNNConfig)
def build_cnn(cfg: DictConfig):
    import keras

    from pipeline.layers import hidden
    from pipeline.mnist import IMAGE_SHAPE, NUM_CLASSES
    from pipeline.preprocess import FEATURES

    m = cfg.model
    layers: list = [
        keras.Input(shape=(FEATURES,), name="pixels"),
        keras.layers.Reshape((*IMAGE_SHAPE, 1)),  # back to images, inside the model
    ]
    for filters in m.filters:
        for _ in range(m.convs_per_block):
            layers += hidden(
                keras.layers.Conv2D, filters, cfg, spatial=True, kernel_size=m.kernel_size,
                padding="same",
            )  # fmt: skip
        layers.append(keras.layers.MaxPooling2D())
    layers.append(keras.layers.Flatten())
    layers += hidden(keras.layers.Dense, m.dense_units, cfg)
    if m.dropout:
        layers.append(keras.layers.Dropout(m.dropout))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="digit"))
    return keras.Sequential(layers, name="cnn")
