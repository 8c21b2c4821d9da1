"""The seed's network, generalised: a hidden Dense block per entry of `hidden_units`."""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING, DictConfig

from pipeline.models import ModelConfig, register


@dataclass
class MLPConfig(ModelConfig):
    hidden_units: list[int] = MISSING


@register("mlp", MLPConfig)
def build_mlp(cfg: DictConfig):
    import keras

    from pipeline.layers import hidden
    from pipeline.mnist import NUM_CLASSES
    from pipeline.preprocess import FEATURES

    layers: list = [keras.Input(shape=(FEATURES,), name="pixels")]
    for units in cfg.model.hidden_units:
        layers += hidden(keras.layers.Dense, units, cfg)
        if cfg.model.dropout:
            layers.append(keras.layers.Dropout(cfg.model.dropout))
    layers.append(keras.layers.Dense(NUM_CLASSES, activation="softmax", name="digit"))
    return keras.Sequential(layers, name="mlp")
