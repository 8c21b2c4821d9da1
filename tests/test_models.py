"""Model and optimizer construction from the config."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.activations import ACTIVATIONS
from pipeline.config import MODELS, OPTIMIZERS, Activation, compose, validate
from pipeline.fit import build_from_config
from pipeline.models.build import BUILDERS
from pipeline.models.build import OPTIMIZERS as KERAS_OPTIMIZERS


def build_model(cfg, total_steps: int | None = None):
    """The configured model for MNIST's 28x28 images and 10 classes, as the train stage
    builds it."""
    return build_from_config(cfg, (28, 28), 10, total_steps)


def test_registries_agree_with_the_config_schemas() -> None:
    assert set(BUILDERS) == set(MODELS) == {"mlp", "cnn"}
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


def test_cosine_schedule_decays_to_zero_over_all_steps() -> None:
    model = build_model(validate(compose(["lr_schedule=cosine"])), total_steps=100)
    schedule = model.optimizer._learning_rate
    assert float(schedule(0)) == pytest.approx(0.001)
    assert float(schedule(50)) == pytest.approx(0.0005)
    assert float(schedule(100)) == pytest.approx(0.0)
    with pytest.raises(ValueError, match="needs the number of training steps"):
        build_model(validate(compose(["lr_schedule=cosine"])))


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("activation", [a.name for a in Activation])
def test_every_activation_builds_in_every_model(model: str, activation: str) -> None:
    cfg = validate(compose([f"model={model}", f"activation={activation}"]))
    built = build_model(cfg, total_steps=10)
    # What follows the first hidden layer (past its batch normalization) is what the name
    # stands for: Keras' function of that name, or the table's layer.
    entry = ACTIVATIONS[activation]
    first = next(i for i, layer in enumerate(built.layers) if hasattr(layer, "kernel"))
    after = next(x for x in built.layers[first + 1 :] if type(x).__name__ != "BatchNormalization")
    if entry.layer is None:
        applied = built.layers[first].activation
        if applied.__name__ == "linear":  # batch norm in between: an Activation layer
            applied = after.activation
        assert applied.__name__ == activation
    else:
        assert built.layers[first].activation.__name__ == "linear"
        assert type(after).__name__ == entry.layer
    out = built.predict(np.ones((2, 784), np.float32), verbose=0)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_hidden_units_list_sets_depth() -> None:
    model = build_model(validate(compose(["model.hidden_units=[64,32,16]"])))
    assert [layer.units for layer in model.layers] == [64, 32, 16, 10]


@pytest.mark.parametrize(
    ("overrides", "cls", "attrs"),
    [
        (["optimizer=adam", "optimizer.learning_rate=0.01"], "Adam", {"beta_1": 0.9}),
        (
            ["optimizer=sgd", "optimizer.momentum=0.9", "optimizer.nesterov=true"],
            "SGD",
            {"momentum": 0.9, "nesterov": True},
        ),
        (["optimizer.rho=0.8"], "RMSprop", {"rho": 0.8}),
    ],
)
def test_optimizer_follows_the_config(overrides: list[str], cls: str, attrs: dict) -> None:
    optimizer = build_model(validate(compose(overrides))).optimizer
    assert type(optimizer).__name__ == cls
    for name, value in attrs.items():
        assert getattr(optimizer, name) == pytest.approx(value)


def layer_types(model) -> list[str]:
    return [type(layer).__name__ for layer in model.layers]


def test_maxout_keeps_the_max_of_each_group_of_pieces() -> None:
    from pipeline.models.layers import Maxout

    dense_out = np.array([[1, 5, 2, -1, -4, -2]], np.float32)
    np.testing.assert_array_equal(Maxout(3)(dense_out), [[5, -1]])
    conv_out = np.arange(16, dtype=np.float32).reshape(1, 2, 2, 4) * np.array([1, -1, 1, -1])
    np.testing.assert_array_equal(Maxout(2)(conv_out), conv_out[..., ::2])
    with pytest.raises(ValueError, match="at least 2 pieces"):
        Maxout(1)


def test_maxout_widens_the_layer_before_it() -> None:
    model = build_model(validate(compose(["activation=maxout", "activation_args.pieces=3"])))
    assert layer_types(model) == ["Dense", "Maxout", "Dense"]
    assert model.layers[0].units == 512 * 3
    assert model.count_params() == 784 * 1536 + 1536 + 512 * 10 + 10


def test_activation_arguments_reach_the_layers() -> None:
    leaky = build_model(
        validate(compose(["activation=leaky_relu", "activation_args.negative_slope=0.1"]))
    )
    assert leaky.layers[1].negative_slope == pytest.approx(0.1)
    elu = build_model(validate(compose(["activation=elu", "activation_args.alpha=0.5"])))
    assert elu.layers[1].alpha == pytest.approx(0.5)


def test_prelu_learns_one_slope_per_channel_in_the_cnn() -> None:
    model = build_model(validate(compose(["model=cnn", "activation=prelu"])), total_steps=10)
    slopes = [layer.alpha.shape for layer in model.layers if type(layer).__name__ == "PReLU"]
    assert slopes == [(1, 1, 32), (1, 1, 64), (128,)]


def test_dropout_l2_and_batch_norm_are_where_the_config_says() -> None:
    cfg = validate(
        compose(
            [
                "model.hidden_units=[256,128]",
                "model.dropout=0.3",
                "model.l2=0.0001",
                "model.batch_norm=true",
            ]
        )
    )
    model = build_model(cfg)
    block = ["Dense", "BatchNormalization", "Activation", "Dropout"]
    assert layer_types(model) == [*block, *block, "Dense"]
    dense = model.layers[0]
    assert dense.use_bias is False  # the normalization's offset replaces it
    assert float(dense.kernel_regularizer.l2) == pytest.approx(1e-4)
    assert model.layers[3].rate == pytest.approx(0.3)
    assert model.layers[-1].kernel_regularizer is None  # the output layer is not penalised


def test_seed_defaults_add_no_regularization() -> None:
    model = build_model(validate(compose()))
    assert layer_types(model) == ["Dense", "Dense"]
    assert model.layers[0].kernel_regularizer is None and model.losses == []


def test_cnn_reshapes_pixels_inside_the_model() -> None:
    model = build_model(validate(compose(["model=cnn"])), total_steps=10)
    assert layer_types(model)[:2] == ["Reshape", "Conv2D"]
    assert model.input_shape == (None, 784)
    assert [layer.filters for layer in model.layers if hasattr(layer, "filters")] == [32, 64]
    probs = model.predict(np.zeros((3, 784), np.float32), verbose=0)
    assert probs.shape == (3, 10)
