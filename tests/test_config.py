"""Configuration: one source of truth, and bad input refused in one line before any work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, python
from omegaconf import OmegaConf

from pipeline.activations import ALIASES, ARGUMENTS, TABLE, markdown
from pipeline.config import MODELS, OPTIMIZERS, Activation, compose, validate
from pipeline.errors import ConfigError
from pipeline.overrides import check_overrides


def test_params_yaml_is_exactly_conf_composed_without_overrides() -> None:
    composed = OmegaConf.to_container(compose(), resolve=True, enum_to_str=True)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    assert params == composed, "params.yaml is stale: regenerate it with `make params`"


def test_defaults_are_the_seed() -> None:
    cfg = validate(compose())
    assert cfg.activation is Activation.relu
    assert (cfg.epochs, cfg.batch_size) == (5, 128)
    assert list(cfg.model.hidden_units) == [512]
    assert cfg.optimizer.name == "rmsprop"
    assert cfg.optimizer.learning_rate == 0.001  # Keras' RMSprop default
    assert cfg.data.train_samples is None


@pytest.mark.parametrize("entry", TABLE, ids=lambda a: a.name)
def test_every_activation_in_the_table_is_one_keras_builds(entry) -> None:
    import keras

    from pipeline.models.layers import Maxout

    cfg = validate(compose([f"activation={entry.name}"]))
    assert cfg.activation.value == entry.name
    if entry.layer is None:
        assert keras.activations.get(entry.name).__name__ == entry.name
    else:
        assert getattr(keras.layers, entry.layer, None) or entry.layer == Maxout.__name__


def test_activation_choices_and_arguments_come_from_the_table() -> None:
    assert [a for a in Activation.__members__ if a not in ALIASES] == [a.name for a in TABLE]
    cfg = validate(compose())
    assert dict(cfg.activation_args) == {a.name: a.default for a in ARGUMENTS.values()}


def test_the_configuration_page_lists_every_activation_as_the_table_says() -> None:
    assert markdown() in (ROOT / "docs" / "configuration.md").read_text()


def test_cnn_brings_its_schedule_which_overrides_still_replace() -> None:
    cfg = validate(compose(["model=cnn"]))
    assert (cfg.model.name, cfg.epochs, cfg.lr_schedule.name) == ("cnn", 10, "cosine")
    assert validate(compose(["model=cnn", "epochs=2"])).epochs == 2
    assert validate(compose(["epochs=2", "model=cnn"])).epochs == 2


def test_swish_is_recorded_as_silu() -> None:
    assert validate(compose(["activation=swish"])).activation is Activation.silu


@pytest.mark.parametrize("group", ["model", "optimizer"])
def test_every_group_choice_composes(group: str) -> None:
    for name in {"model": MODELS, "optimizer": OPTIMIZERS}[group]:
        assert validate(compose([f"{group}={name}"]))[group].name == name


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("activation=foo", "activation: invalid value 'foo'; valid choices: relu, leaky_relu,"),
        ("optimizer=adamw", "optimizer: invalid value 'adamw'; valid choices: rmsprop, adam, sgd"),
        ("model=resnet", "model: invalid value 'resnet'; valid choices: mlp, cnn"),
        ("epochs=0", "epochs: invalid value 0; must be a positive integer"),
        ("epochs=-3", "epochs: invalid value -3; must be a positive integer"),
        ("batch_size=0", "batch_size: invalid value 0; must be a positive integer"),
        ("epochs=five", "epochs: invalid value 'five'; must be an integer"),
        ("batch_size=1.5", "batch_size: invalid value 1.5; must be an integer"),
        ("optimizer.centered=maybe", "optimizer.centered: invalid value 'maybe'; must be true"),
        ("optimizer.learning_rate=0", "optimizer.learning_rate: invalid value 0.0; must be pos"),
        ("model.hidden_units=[512,0]", "model.hidden_units: invalid value [512, 0]; must be a"),
        ("data.train_samples=0", "data.train_samples: invalid value 0; must be null (all)"),
        ("activation_args.pieces=1", "activation_args.pieces: invalid value 1; must be at least 2"),
        ("activation_args.alpha=-1", "activation_args.alpha: invalid value -1.0; must be non-neg"),
        ("activation_args.negative_slope=-0.1", "activation_args.negative_slope: invalid value"),
        ("lr_schedule=linear", "lr_schedule: invalid value 'linear'; valid choices: constant,"),
        ("val_split=1.0", "val_split: invalid value 1.0; must be in [0, 1)"),
        (
            "early_stopping.patience=3",
            "early_stopping.patience: invalid value 3; must be null unless",
        ),
        (
            "early_stopping.patience=0",
            "early_stopping.patience: invalid value 0; must be null (off)",
        ),
        ("model.dropout=1.0", "model.dropout: invalid value 1.0; must be in [0, 1)"),
        ("model.l2=-0.001", "model.l2: invalid value -0.001; must be non-negative"),
        (
            "model=cnn model.filters=[32,-1]",
            "model.filters: invalid value [32, -1]; must be a list",
        ),
        ("model=cnn model.kernel_size=0", "model.kernel_size: invalid value 0; must be a positive"),
        ("epoch=3", "unknown key 'epoch'; valid keys: model, optimizer, data, activation,"),
        ("+optimizer.foo=1", "unknown key 'optimizer.foo' in 'optimizer'; valid keys: name,"),
    ],
)
def test_invalid_values_are_refused_in_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(override.split()))
    assert str(err.value).startswith(expected)
    assert "\n" not in str(err.value)


def test_params_file_is_validated_like_the_cli(tmp_path: Path) -> None:
    params = OmegaConf.to_container(compose(), resolve=True, enum_to_str=True)
    params["optimizer"]["name"] = "adamw"
    with pytest.raises(ConfigError, match="optimizer: invalid value 'adamw'; valid choices"):
        validate(params)
    del params["epochs"]
    params["optimizer"]["name"] = "rmsprop"
    with pytest.raises(ConfigError, match="missing value for epochs"):
        validate(params)


def run_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return python(cwd, "-m", "pipeline.train", *args, check=False)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["activation=foo"], "error: activation: invalid value 'foo'; valid choices: relu,"),
        (["-m", "activation=relu,foo", "epochs=1"], "error: activation: invalid value 'foo';"),
        (["-m", "epochs=1,0"], "error: epochs: invalid value 0; must be a positive integer"),
        (["optimizer=adamw"], "error: optimizer: invalid value 'adamw'; valid choices: rmsprop,"),
        # Hydra's basic sweeper cannot expand an interval: refused before the parent run.
        (
            ["-m", "epochs=interval(1,3)"],
            "error: epochs=interval(1,3): Hydra's basic sweeper "
            "cannot expand interval(...); it takes a list (a=1,2,3), choice(...)",
        ),
    ],
    ids=["single", "sweep-activation", "sweep-epochs", "group", "sweep-interval"],
)
def test_cli_refuses_bad_input_before_any_work(
    tmp_path: Path, tracking_store: str, args: list[str], expected: str
) -> None:
    import mlflow

    runs_before = len(mlflow.search_runs(search_all_experiments=True))
    result = run_train(tmp_path, *args)
    assert result.returncode != 0
    assert result.stderr.strip().startswith(expected)
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert list(tmp_path.iterdir()) == []  # no outputs/, data/, mlflow.db
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs_before


def test_dvc_stage_refuses_a_bad_params_file(tmp_path: Path) -> None:
    params = OmegaConf.to_container(compose(), resolve=True, enum_to_str=True)
    params["activation"] = "relu7"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = python(tmp_path, "-m", "pipeline.fit", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "error: activation: invalid value 'relu7'; valid choices: "
        + ", ".join(Activation.__members__)
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize(
    "args",
    [
        ["optimizer=glob(*)"],
        ["optimizer=glob(*,exclude=sgd)", "seed=range(0,3)"],
        ["optimizer.learning_rate=interval(0.0001,0.1)"],
        ["activation=choice(relu,elu)"],
    ],
    ids=["glob", "glob-and-range", "interval", "choice"],
)
def test_sweeps_hydra_expands_itself_pass_the_pre_check(args: list[str]) -> None:
    check_overrides(args)  # no HydraException: what cannot be enumerated is left to Hydra


def test_an_interval_is_refused_only_where_the_sweeper_cannot_expand_it() -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from pipeline.overrides import sweep_values

    parsed = OverridesParser.create().parse_overrides(["epochs=1,2", "seed=range(3)"])
    assert sweep_values(parsed) == [["epochs=1", "epochs=2"], ["seed=0", "seed=1", "seed=2"]]
    interval = OverridesParser.create().parse_overrides(["epochs=1", "lr=tag(log,interval(1,2))"])
    with pytest.raises(ConfigError, match=r"^lr=tag\(log,interval\(1,2\)\): Hydra's basic"):
        sweep_values(interval)
    assert sweep_values(interval, "a.search.Sweeper") == [["epochs=1"]]  # it expands it itself
    with pytest.raises(ConfigError, match="basic sweeper cannot expand interval"):
        check_overrides(["-m", "optimizer.learning_rate=interval(0.001,0.1)"])


def test_the_pre_check_still_refuses_what_it_can_enumerate_beside_a_glob() -> None:
    with pytest.raises(ConfigError, match=r"^epochs: invalid value 0; must be a positive"):
        check_overrides(["optimizer=glob(*)", "epochs=1,0"])
    with pytest.raises(ConfigError, match=r"^activation: invalid value 'relu7'; valid choices"):
        check_overrides(["optimizer.learning_rate=interval(0.001,0.1)", "activation=relu,relu7"])


def test_group_choices_hold_no_schemas() -> None:
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from pipeline.config import CONF_DIR, register_schemas

    register_schemas()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        assert sorted(loader.get_group_options("model")) == ["cnn", "mlp"]
        assert sorted(loader.get_group_options("optimizer")) == ["adam", "rmsprop", "sgd"]


def test_help_names_the_choices_the_common_keys_and_an_example(tmp_path: Path) -> None:
    result = python(tmp_path, "-m", "pipeline.train", "--help")
    text = result.stdout
    assert "model=cnn, mlp" in text and "optimizer=adam, rmsprop, sgd" in text
    assert "activation=" + ", ".join(Activation.__members__) in text
    assert "schema" not in text
    assert "epochs=5 batch_size=128" in text and "python -m pipeline.train model=cnn" in text
    assert list(tmp_path.iterdir()) == []  # help writes nothing
