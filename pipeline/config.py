"""The configuration checked before any work: `compose` (Hydra's, with the schemas of
pipeline.schema) and `validate`, which re-checks a composed config (or one read back from
`params.yaml`) and adds the range checks that types alone cannot express.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from pipeline.activations import ARGUMENTS
from pipeline.data.idx import IDX_FILES  # the dataset format's file names (no TensorFlow)
from pipeline.errors import ConfigError
from pipeline.schema import (
    CONF_DIR,
    MODELS,
    OPTIMIZERS,
    SEARCH_SWEEPER,
    Activation,
    Config,
    Distribute,
    LRSchedule,
    Objective,
    Pruner,
    Sampler,
    choice_list,
    register_schemas,
)

# What callers read from here with the checks: the schema's names they need.
__all__ = [
    "CONF_DIR",
    "MODELS",
    "OPTIMIZERS",
    "Activation",
    "Distribute",
    "LRSchedule",
    "compose",
    "load_params",
    "register_schemas",
    "validate",
]

# The study preset (conf/experiment/selection.yaml) that picks on validation as well as on test.
SELECTION_STUDY = "selection"


def one_line(err: OmegaConfBaseException) -> ConfigError:
    """Turn OmegaConf's multi-line error into ours: key, bad value, what is valid."""
    key = err.full_key or str(err.key)
    if isinstance(err, ConfigKeyError | ConfigAttributeError):
        parent = key.rpartition(".")[0]
        node = err.parent_node
        valid = choice_list(k for k in (node or {}) if k != "hydra")
        where = f" in '{parent}'" if parent else ""
        return ConfigError(f"unknown key '{key}'{where}; valid keys: {valid}")
    enum = {
        "activation": Activation,
        "lr_schedule": LRSchedule,
        "train.distribute": Distribute,
        "search.sampler": Sampler,
        "search.pruner": Pruner,
    }.get(key)
    if enum is not None:
        return ConfigError(
            f"{key}: invalid value {err.value!r}; valid choices: {choice_list(enum.__members__)}"
        )
    return ConfigError(f"{key}: invalid value {err.value!r}; must be {_expected(err.msg)}")


def _expected(msg: str) -> str:
    """What OmegaConf's type error expected, in words ("...could not be converted to Integer")."""
    for word, expected in (
        ("Integer", "an integer"),
        ("Float", "a number"),
        ("bool", "true or false"),
        ("ListConfig", "a list"),
        ("DictConfig", "a mapping"),
    ):
        if word in msg:
            return expected
    return "of the type the schema declares"


def _typed(values: Any, key: str, registry: dict[str, type]) -> DictConfig:
    name = values.get("name") if isinstance(values, dict) else None
    if name not in registry:
        raise ConfigError(f"{key}: invalid value {name!r}; valid choices: {choice_list(registry)}")
    try:
        return OmegaConf.merge(OmegaConf.structured(registry[name]), values)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as err:
        err.full_key = f"{key}.{err.full_key}"
        raise


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: invalid value {value!r}; must be {rule}")


def _validated(cfg: DictConfig) -> bool:
    """Whether `cfg` is what `validate` returns: the schema's type, read-only."""
    return OmegaConf.get_type(cfg) is Config and bool(OmegaConf.is_readonly(cfg))


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Check a composed config against the schema and the value ranges.

    Args:
        cfg: A Hydra-composed config or the plain contents of `params.yaml`.

    Returns:
        A typed, read-only config holding exactly the schema's keys.

    Raises:
        ConfigError: one line naming the bad key, its value and the valid choices.
    """
    if isinstance(cfg, DictConfig) and _validated(cfg):
        return cfg  # validate's own result, passed on by an entry point: checked already
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    values = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Config), values)
        typed.model = _typed(values.get("model"), "model", MODELS)
        typed.optimizer = _typed(values.get("optimizer"), "optimizer", OPTIMIZERS)
        missing = sorted(OmegaConf.missing_keys(typed))
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as err:
        raise one_line(err) from None
    if missing:
        raise ConfigError(f"missing value for {', '.join(missing)}")

    _check_training(typed)
    _check_model(typed.model)
    _check_optimizer(typed.optimizer)
    _check_data(typed.data)
    _check_search(typed)
    experiment = typed.tracking.experiment
    _check(bool(experiment.strip()), "tracking.experiment", experiment, "a non-empty name")
    OmegaConf.set_readonly(typed, True)
    return typed


def _check_training(typed: DictConfig) -> None:
    """The ranges of the training keys: epochs, batches, seed, held-out data, devices."""
    _check(typed.epochs > 0, "epochs", typed.epochs, "a positive integer")
    _check(typed.batch_size > 0, "batch_size", typed.batch_size, "a positive integer")
    _check(typed.seed >= 0, "seed", typed.seed, "a non-negative integer")
    _check(0 <= typed.val_split < 1, "val_split", typed.val_split, "in [0, 1)")
    patience = typed.early_stopping.patience
    key = "early_stopping.patience"
    _check(patience is None or patience >= 1, key, patience, "null (off) or a positive integer")
    leak = "null unless val_split > 0 (stopping on the test set would leak it)"
    _check(patience is None or typed.val_split > 0, key, patience, leak)
    cpu_devices = typed.train.cpu_devices
    _check(cpu_devices >= 1, "train.cpu_devices", cpu_devices, "a positive integer")
    mirrored = typed.train.distribute is Distribute.mirrored
    rule = "1 unless train.distribute=mirrored"
    _check(cpu_devices == 1 or mirrored, "train.cpu_devices", cpu_devices, rule)
    for arg in ARGUMENTS.values():
        value = typed.activation_args[arg.name]
        rule = "non-negative" if arg.minimum == 0 else f"at least {arg.minimum}"
        _check(value >= arg.minimum, f"activation_args.{arg.name}", value, rule)
    steps = typed.train.steps_per_execution
    _check(steps >= 1, "train.steps_per_execution", steps, "a positive integer")
    if typed.study.name == SELECTION_STUDY:  # it picks a winner on validation too
        rule = "> 0 for the selection study (it picks on validation as well as on test)"
        _check(typed.val_split > 0, "val_split", typed.val_split, rule)


def _check_search(typed: DictConfig) -> None:
    """A search chooses on validation only: its objective is a validation metric, and it
    needs the validation rows to score it on."""
    search = typed.search
    valid = choice_list(Objective.__members__)
    rule = f"a validation metric ({valid}): choosing on the test or training set overfits it"
    _check(search.objective in Objective.__members__, "search.objective", search.objective, rule)
    for key in ("trials", "final_seeds", "startup_trials"):
        _check(search[key] >= 0, f"search.{key}", search[key], "a non-negative integer")
    _check(search.trial is None or search.trial >= 0, "search.trial", search.trial, "null or >= 0")
    if search.trial is not None:
        check_search_split(typed)
    for key in ("study", "storage"):
        value = search[key]
        _check(value is None or bool(value.strip()), f"search.{key}", value, "null or a name")


def searching(cfg: DictConfig) -> bool:
    """Whether `cfg` (a composed config with Hydra's) runs a search: the search sweeper."""
    target = OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or ""
    return target == SEARCH_SWEEPER


def check_search_split(cfg: DictConfig) -> None:
    """A search needs validation rows: refused with `val_split=0` (it would rank on test)."""
    rule = "> 0 for a search (it chooses on validation; val_split=0 would choose on the test set)"
    split = cfg.val_split
    _check(isinstance(split, int | float) and split > 0, "val_split", split, rule)


def sees_test_set(cfg: DictConfig) -> bool:
    """False for a search's trial (`search.trial` set): it never reads the test set, so that
    the configuration a search chooses is chosen on validation alone."""
    return cfg.search.trial is None


def _check_data(data: DictConfig) -> None:
    _check(
        re.fullmatch(r"[A-Za-z0-9_.-]+", data.name) is not None,
        "data.name",
        data.name,
        "letters, digits, '_', '-' or '.' (it names directories)",
    )
    classes = list(data.classes)
    _check(
        len(classes) >= 2 and len(set(classes)) == len(classes),
        "data.classes",
        classes,
        "at least 2 distinct class names",
    )
    _check(
        re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", data.mirror_env) is not None,
        "data.mirror_env",
        data.mirror_env,
        "an environment variable's name",
    )
    names = sorted(IDX_FILES.values())
    _check(
        sorted(data.idx_sha256) == names,
        "data.idx_sha256",
        sorted(data.idx_sha256),
        f"a checksum for each of {', '.join(names)}",
    )
    for name, digest in data.idx_sha256.items():
        _check(_is_sha256(digest), f"data.idx_sha256.{name}", digest, "64 hex digits")
    _check(
        data.npz_sha256 is None or _is_sha256(data.npz_sha256),
        "data.npz_sha256",
        data.npz_sha256,
        "64 hex digits, or null when no source is an .npz",
    )
    for source in data.sources:
        _check(
            not source.endswith(".npz") or data.npz_sha256 is not None,
            "data.sources",
            source,
            "IDX bases only while data.npz_sha256 is null",
        )
    _check(data.retries >= 1, "data.retries", data.retries, "at least 1")
    _check(data.timeout > 0, "data.timeout", data.timeout, "positive seconds")
    for key in ("train_samples", "test_samples", "fit_samples"):
        n = data[key]
        _check(n is None or n > 0, f"data.{key}", n, "null (all) or a positive integer")
    _check(0 <= data.label_noise < 1, "data.label_noise", data.label_noise, "in [0, 1)")


def _is_sha256(value: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{64}", value) is not None


def _check_model(model: DictConfig) -> None:
    for key in ("hidden_units", "filters"):
        if key in model:
            units = list(model[key])
            _check(all(u > 0 for u in units), f"model.{key}", units, "a list of positive integers")
    for key in ("convs_per_block", "kernel_size", "dense_units"):
        if key in model:
            _check(model[key] > 0, f"model.{key}", model[key], "a positive integer")
    _check(0 <= model.dropout < 1, "model.dropout", model.dropout, "in [0, 1)")
    _check(model.l2 >= 0, "model.l2", model.l2, "non-negative")


def _check_optimizer(opt: DictConfig) -> None:
    _check(opt.learning_rate > 0, "optimizer.learning_rate", opt.learning_rate, "positive")
    if "momentum" in opt:
        _check(0 <= opt.momentum < 1, "optimizer.momentum", opt.momentum, "in [0, 1)")
    for key in ("rho", "beta_1", "beta_2"):
        if key in opt:
            _check(0 < opt[key] < 1, f"optimizer.{key}", opt[key], "in (0, 1)")
    if "epsilon" in opt:
        _check(opt.epsilon > 0, "optimizer.epsilon", opt.epsilon, "positive")


def load_params(path: Path | str) -> DictConfig:
    """Read and validate `params.yaml`, the config DVC's stages run with."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file {str(path)!r} not found; run from the project root")
    return validate(OmegaConf.to_container(OmegaConf.load(path)))


def compose(overrides: list[str] | tuple[str, ...] = (), hydra: bool = False) -> DictConfig:
    """Compose `conf/` with Hydra, as `python -m pipeline.train` and `dvc exp run` do; with
    `hydra`, Hydra's own config (`hydra.sweeper.params`, ...) included."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    register_schemas()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            return hydra_compose("config", overrides=list(overrides), return_hydra_config=hydra)
    except HydraException as err:
        raise hydra_error(err) from None


def hydra_error(err: Exception) -> ConfigError:
    """One line for an error Hydra raised while composing."""
    from hydra.errors import MissingConfigException

    cause = err
    while cause is not None:
        if isinstance(cause, MissingConfigException) and cause.options is not None:
            group = (cause.missing_cfg_file or "").split("/")[0]
            bad = (cause.missing_cfg_file or "").split("/")[-1]
            registry = {"model": MODELS, "optimizer": OPTIMIZERS}.get(group)
            options = registry or cause.options
            return ConfigError(
                f"{group}: invalid value {bad!r}; valid choices: {choice_list(options)}"
            )
        if isinstance(cause, OmegaConfBaseException):
            return one_line(cause)
        cause = cause.__cause__ or cause.__context__
    return ConfigError(str(err).split("\n")[0])


def main() -> None:
    """Print `conf/` composed with the overrides given, exactly as DVC writes params.yaml."""
    import sys

    try:
        print(OmegaConf.to_yaml(compose(sys.argv[1:]), resolve=True), end="")
    except ConfigError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
