"""Model and optimizer construction from the config."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import MODELS, OPTIMIZERS, Activation, compose, validate
from pipeline.models import BUILDERS, build_model
from pipeline.models import OPTIMIZERS as KERAS_OPTIMIZERS


def test_registries_agree_with_the_config_schemas() -> None:
    assert set(BUILDERS) == set(MODELS)
    assert set(KERAS_OPTIMIZERS) == set(OPTIMIZERS)


def test_seed_model_shape_and_parameter_count() -> None:
    model = build_model(validate(compose()))
    assert model.count_params() == 784 * 512 + 512 + 512 * 10 + 10 == 407_050
    assert [layer.units for layer in model.layers] == [512, 10]
    assert model.layers[0].activation.__name__ == "relu"
    probs = model.predict(np.random.default_rng(0).random((4, 784), np.float32), verbose=0)
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_seed_model_compiles_as_the_seed() -> None:
    model = build_model(validate(compose()))
    assert type(model.optimizer).__name__ == "RMSprop"
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert model.loss == "categorical_crossentropy"


@pytest.mark.parametrize("activation", [a.name for a in Activation])
def test_every_activation_builds_a_working_model(activation: str) -> None:
    model = build_model(validate(compose([f"activation={activation}"])))
    assert model.layers[0].activation.__name__ == activation
    out = model.predict(np.ones((2, 784), np.float32), verbose=0)
    assert np.isfinite(out).all()


def test_hidden_units_list_sets_depth() -> None:
    model = build_model(validate(compose(["model.hidden_units=[64,32,16]"])))
    assert [layer.units for layer in model.layers] == [64, 32, 16, 10]


@pytest.mark.parametrize(
    ("overrides", "cls", "attrs"),
    [
        (["optimizer=adam", "optimizer.learning_rate=0.01"], "Adam", {"beta_1": 0.9}),
        (["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"], "SGD",
         {"momentum": 0.9, "nesterov": True}),
        (["optimizer.rho=0.8"], "RMSprop", {"rho": 0.8}),
    ],
)  # fmt: skip
def test_optimizer_follows_the_config(overrides: list[str], cls: str, attrs: dict) -> None:
    optimizer = build_model(validate(compose(overrides))).optimizer
    assert type(optimizer).__name__ == cls
    for name, value in attrs.items():
        assert getattr(optimizer, name) == pytest.approx(value)
