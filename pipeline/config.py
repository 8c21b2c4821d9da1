"""The configuration schema: every key's type and allowed values, checked before any work.

The values themselves live in `conf/` (one source of truth); these dataclasses only say what a
value may be. They are registered in Hydra's ConfigStore, so a bad override fails while Hydra
composes, both in `python -m pipeline.train` and in DVC's compose step for `dvc exp run`
(through `hydra_plugins/`). `validate` re-checks a composed config (or one read back from
`params.yaml`) and adds the range checks that types alone cannot express.
"""

from __future__ import annotations

import copy
import dataclasses
import re
import secrets
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    OmegaConfBaseException,
    ValidationError,
)

from pipeline.activations import ACTIVATIONS, ARGUMENTS
from pipeline.data.idx import IDX_FILES  # the dataset format's file names (no TensorFlow)
from pipeline.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# The names `activation=` accepts, from the activation table; an alias is an Enum alias, so
# a run records the table's own name (`swish` -> `silu`).
Activation = Enum(  # type: ignore[misc]
    "Activation", [(n, a.name) for a in ACTIVATIONS.values() for n in (a.name, *a.aliases)]
)
# `activation_args`: every argument of the table's activations, with its default.
ActivationArgs = dataclasses.make_dataclass(
    "ActivationArgs",
    [(a.name, a.kind, field(default=a.default)) for a in ARGUMENTS.values()],
)


class LRSchedule(Enum):
    """How the learning rate moves over training."""

    constant = "constant"  # the seed's: the optimizer's learning_rate throughout
    cosine = "cosine"  # from learning_rate down to 0 along a half cosine, over all steps


class Distribute(Enum):
    """How one model is trained on the machine's devices."""

    none = "none"  # the seed's: one device, as TensorFlow places it
    mirrored = "mirrored"  # one replica per GPU (or logical CPU), gradients averaged each step


@dataclass
class ModelConfig:
    """The keys every model has; the shared hidden-layer builder reads the last three."""

    name: str = MISSING
    dropout: float = MISSING
    l2: float = MISSING
    batch_norm: bool = MISSING


@dataclass
class MLPConfig(ModelConfig):
    hidden_units: list[int] = MISSING


@dataclass
class CNNConfig(ModelConfig):
    filters: list[int] = MISSING
    convs_per_block: int = MISSING
    kernel_size: int = MISSING
    dense_units: int = MISSING


@dataclass
class RMSpropConfig:
    name: str = MISSING
    learning_rate: float = MISSING
    rho: float = MISSING
    momentum: float = MISSING
    epsilon: float = MISSING
    centered: bool = MISSING


@dataclass
class AdamConfig:
    name: str = MISSING
    learning_rate: float = MISSING
    beta_1: float = MISSING
    beta_2: float = MISSING
    epsilon: float = MISSING
    amsgrad: bool = MISSING


@dataclass
class SGDConfig:
    name: str = MISSING
    learning_rate: float = MISSING
    momentum: float = MISSING
    nesterov: bool = MISSING


@dataclass
class DataConfig:
    name: str = MISSING
    classes: list[str] = MISSING
    mirror_env: str = MISSING
    sources: list[str] = MISSING
    idx_sha256: dict[str, str] = MISSING
    npz_sha256: str | None = MISSING
    retries: int = MISSING
    timeout: float = MISSING
    train_samples: int | None = MISSING
    test_samples: int | None = MISSING
    fit_samples: int | None = MISSING
    label_noise: float = MISSING


@dataclass
class EarlyStoppingConfig:
    patience: int | None = MISSING


@dataclass
class TrainConfig:
    resume: bool = MISSING
    distribute: Distribute = MISSING
    cpu_devices: int = MISSING
    steps_per_execution: int = MISSING


@dataclass
class TrackingConfig:
    experiment: str = MISSING


@dataclass
class StudyConfig:
    name: str | None = None
    x: str | None = None


@dataclass
class Config:
    # model and optimizer hold one of the schemas below, chosen by their `name`.
    model: Any = MISSING
    optimizer: Any = MISSING
    data: DataConfig = MISSING
    activation: Activation = MISSING
    activation_args: ActivationArgs = field(default_factory=ActivationArgs)
    epochs: int = MISSING
    batch_size: int = MISSING
    seed: int = MISSING
    lr_schedule: LRSchedule = MISSING
    val_split: float = MISSING
    early_stopping: EarlyStoppingConfig = MISSING
    train: TrainConfig = MISSING
    tracking: TrackingConfig = MISSING
    study: StudyConfig = field(default_factory=StudyConfig)


# The config-group choices with their schemas. A model is its schema here, its builder in
# pipeline/models/ and its YAML file in conf/model/ (a test checks the three agree); an
# optimizer is its schema here, its Keras class in pipeline/models/ and conf/optimizer/.
MODELS: dict[str, type] = {"mlp": MLPConfig, "cnn": CNNConfig}
OPTIMIZERS: dict[str, type] = {"rmsprop": RMSpropConfig, "adam": AdamConfig, "sgd": SGDConfig}
# Where the schemas live in Hydra's ConfigStore: apart from the groups' own choices, so that
# `--help` and `optimizer=glob(*)` see only the YAML files.
SCHEMA_GROUP = "schema"


def register_schemas() -> None:
    """Register the schemas in Hydra's ConfigStore under the names `conf/` refers to, the
    `choices` resolver the help text uses and the `unique` one run directories use."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="config_schema", node=Config)
    for group, schemas in (("model", MODELS), ("optimizer", OPTIMIZERS)):
        for name, schema in schemas.items():
            store.store(group=f"{SCHEMA_GROUP}/{group}", name=name, node=schema)
    OmegaConf.register_new_resolver("choices", choices, replace=True)
    # Cached in the config, which Hydra copies to each job of a sweep (joblib's processes
    # included): one value per command, the same in all its jobs.
    OmegaConf.register_new_resolver("unique", unique, replace=True, use_cache=True)


def unique() -> str:
    """A random suffix that makes a run directory's name (`outputs/<date>/<time>-<suffix>`)
    one no other command gets, even one started in the same second, in any process."""
    return secrets.token_hex(4)


def choices(what: str) -> str:
    """The valid values of a config group (`model`) or of `activation`, for the help text."""
    if what == "activation":
        return _choices(Activation.__members__)
    return _choices(sorted(p.stem for p in (CONF_DIR / what).glob("*.yaml")))


def _choices(values: Any) -> str:
    return ", ".join(str(v) for v in values)


def _one_line(err: OmegaConfBaseException) -> ConfigError:
    """Turn OmegaConf's multi-line error into ours: key, bad value, what is valid."""
    key = err.full_key or str(err.key)
    if isinstance(err, ConfigKeyError | ConfigAttributeError):
        parent = key.rpartition(".")[0]
        node = err.parent_node
        valid = _choices(k for k in (node or {}) if k != "hydra")
        where = f" in '{parent}'" if parent else ""
        return ConfigError(f"unknown key '{key}'{where}; valid keys: {valid}")
    enum = {
        "activation": Activation,
        "lr_schedule": LRSchedule,
        "train.distribute": Distribute,
    }.get(key)
    if enum is not None:
        return ConfigError(
            f"{key}: invalid value {err.value!r}; valid choices: {_choices(enum.__members__)}"
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
        raise ConfigError(f"{key}: invalid value {name!r}; valid choices: {_choices(registry)}")
    try:
        return OmegaConf.merge(OmegaConf.structured(registry[name]), values)
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as err:
        err.full_key = f"{key}.{err.full_key}"
        raise


def _check(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: invalid value {value!r}; must be {rule}")


def validate(cfg: DictConfig | dict) -> DictConfig:
    """Check a composed config against the schema and the value ranges.

    Args:
        cfg: A Hydra-composed config or the plain contents of `params.yaml`.

    Returns:
        A typed, read-only config holding exactly the schema's keys.

    Raises:
        ConfigError: one line naming the bad key, its value and the valid choices.
    """
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    values = {k: v for k, v in cfg.items() if k != "hydra"}
    try:
        typed = OmegaConf.merge(OmegaConf.structured(Config), values)
        typed.model = _typed(values.get("model"), "model", MODELS)
        typed.optimizer = _typed(values.get("optimizer"), "optimizer", OPTIMIZERS)
        missing = sorted(OmegaConf.missing_keys(typed))
    except (ValidationError, ConfigKeyError, ConfigAttributeError) as err:
        raise _one_line(err) from None
    if missing:
        raise ConfigError(f"missing value for {', '.join(missing)}")

    _check(typed.epochs > 0, "epochs", typed.epochs, "a positive integer")
    _check(typed.batch_size > 0, "batch_size", typed.batch_size, "a positive integer")
    _check(typed.seed >= 0, "seed", typed.seed, "a non-negative integer")
    _check(0 <= typed.val_split < 1, "val_split", typed.val_split, "in [0, 1)")
    patience = typed.early_stopping.patience
    _check(patience is None or patience >= 1, "early_stopping.patience", patience,
           "null (off) or a positive integer")  # fmt: skip
    _check(patience is None or typed.val_split > 0, "early_stopping.patience", patience,
           "null unless val_split > 0 (stopping on the test set would leak it)")  # fmt: skip
    cpu_devices = typed.train.cpu_devices
    _check(cpu_devices >= 1, "train.cpu_devices", cpu_devices, "a positive integer")
    _check(cpu_devices == 1 or typed.train.distribute is Distribute.mirrored,
           "train.cpu_devices", cpu_devices, "1 unless train.distribute=mirrored")  # fmt: skip
    for arg in ARGUMENTS.values():
        value = typed.activation_args[arg.name]
        rule = "non-negative" if arg.minimum == 0 else f"at least {arg.minimum}"
        _check(value >= arg.minimum, f"activation_args.{arg.name}", value, rule)
    steps = typed.train.steps_per_execution
    _check(steps >= 1, "train.steps_per_execution", steps, "a positive integer")
    _check_model(typed.model)
    _check_optimizer(typed.optimizer)
    _check_data(typed.data)
    _check(bool(typed.tracking.experiment.strip()), "tracking.experiment",
           typed.tracking.experiment, "a non-empty name")  # fmt: skip
    OmegaConf.set_readonly(typed, True)
    return typed


def _check_data(data: DictConfig) -> None:
    _check(re.fullmatch(r"[A-Za-z0-9_.-]+", data.name) is not None, "data.name", data.name,
           "letters, digits, '_', '-' or '.' (it names directories)")  # fmt: skip
    classes = list(data.classes)
    _check(len(classes) >= 2 and len(set(classes)) == len(classes), "data.classes", classes,
           "at least 2 distinct class names")  # fmt: skip
    _check(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", data.mirror_env) is not None,
           "data.mirror_env", data.mirror_env, "an environment variable's name")  # fmt: skip
    names = sorted(IDX_FILES.values())
    _check(sorted(data.idx_sha256) == names, "data.idx_sha256", sorted(data.idx_sha256),
           f"a checksum for each of {', '.join(names)}")  # fmt: skip
    for name, digest in data.idx_sha256.items():
        _check(_is_sha256(digest), f"data.idx_sha256.{name}", digest, "64 hex digits")
    _check(data.npz_sha256 is None or _is_sha256(data.npz_sha256), "data.npz_sha256",
           data.npz_sha256, "64 hex digits, or null when no source is an .npz")  # fmt: skip
    for source in data.sources:
        _check(not source.endswith(".npz") or data.npz_sha256 is not None, "data.sources",
               source, "IDX bases only while data.npz_sha256 is null")  # fmt: skip
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
                f"{group}: invalid value {bad!r}; valid choices: {_choices(options)}"
            )
        if isinstance(cause, OmegaConfBaseException):
            return _one_line(cause)
        cause = cause.__cause__ or cause.__context__
    return ConfigError(str(err).split("\n")[0])


# Hydra flags that change what runs (help, config printing, another config): with these the
# command line is left to Hydra as it is.
_HYDRA_FLAGS_WITH_OWN_HANDLING = (
    "--help",
    "-h",
    "--hydra-help",
    "--cfg",
    "-c",
    "--info",
    "--config-path",
    "-cp",
    "--config-name",
    "-cn",
    "--config-dir",
    "-cd",
    "--package",
    "-p",
    "--shell-completion",
    "-sc",
    "--version",
)


BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def sweep_values(parsed: list[Any], sweeper: str | None = BASIC_SWEEPER) -> list[list[str]]:
    """Per parsed override, the `key=value` of each job it stands for (`a=1,2`: two). What
    Hydra expands itself when the sweep starts (glob(...), a search sweeper's interval(...))
    is left out; `sweeper` None: not a multirun, where Hydra says what it makes of a sweep.

    Raises:
        ConfigError: interval(...) with the basic sweeper, which cannot expand it.
    """
    from hydra.core.override_parser.types import IntervalSweep
    from hydra.errors import HydraException

    jobs = []
    for override in parsed:
        if not override.is_sweep_override():
            jobs.append([override.input_line])
            continue
        try:
            values = list(override.sweep_string_iterator())
        except HydraException:
            if sweeper == BASIC_SWEEPER and isinstance(override.value(), IntervalSweep):
                raise ConfigError(
                    f"{override.input_line}: Hydra's basic sweeper cannot expand interval(...); "
                    "it takes a list (a=1,2,3), choice(...), range(start,stop) or glob(...)"
                ) from None
            continue  # glob(...) needs Hydra's config loader: Hydra checks it itself
        jobs.append([f"{override.get_key_element()}={v}" for v in values])
    return jobs


def _parsed(args: list[str]) -> tuple[list[Any], str | None]:
    """The command line's overrides parsed, with a multirun config's own sweep
    (`hydra.sweeper.params`, the study presets) for the keys the command line does not set
    (as Hydra's sweeper does); and the sweeper's class (None without -m)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    sweeper = None
    try:
        parsed = parser.parse_overrides([a for a in args if not a.startswith("-")])
        if "-m" in args or "--multirun" in args:
            first = [o.input_line for o in parsed if not o.is_sweep_override()]
            hydra = compose(first, hydra=True).hydra
            sweeper = hydra.sweeper.get("_target_", BASIC_SWEEPER)
            given = {o.get_key_element() for o in parsed}
            own = [f"{k}={v}" for k, v in (hydra.sweeper.params or {}).items() if k not in given]
            parsed += parser.parse_overrides(own)
    except HydraException as err:
        raise hydra_error(err) from None
    return parsed, sweeper


def check_overrides(args: list[str]) -> None:
    """Compose and validate every job a Hydra command line would launch.

    `activation=relu,elu` stands for two jobs; each combination of sweep values is composed
    as its own config, so a bad value anywhere is reported before the first job starts.

    Raises:
        ConfigError: one line for the first invalid job, or a sweep the sweeper cannot expand.
    """
    import itertools

    from hydra.core.override_parser.overrides_parser import OverridesParser

    if any(a.split("=")[0] in _HYDRA_FLAGS_WITH_OWN_HANDLING for a in args):
        return
    parsed, sweeper = _parsed(args)
    jobs = sweep_values(parsed, sweeper)
    parser = OverridesParser.create()
    # Jobs that differ only in plain values (not in config group choices: model=cnn,
    # +experiment=width) are composed once, their values then set on copies, as Hydra does.
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    composed: dict[tuple[str, ...], DictConfig] = {}
    for job in itertools.product(*jobs):
        structure, values = [], []
        for override in parser.parse_overrides(list(job)):
            key = override.key_or_group
            plain = not (override.is_add() or override.is_delete() or override.is_force_add())
            if plain and key not in groups and "/" not in key and key.split(".")[0] != "hydra":
                values.append(override)
            else:
                structure.append(override.input_line)
        if tuple(structure) not in composed:
            composed[tuple(structure)] = compose(structure)
        cfg = copy.deepcopy(composed[tuple(structure)])
        try:
            for override in values:
                OmegaConf.update(cfg, override.key_or_group, override.value(), merge=True)
        except OmegaConfBaseException as err:
            raise _one_line(err) from None
        validate(cfg)


def main() -> None:
    """Print `conf/` composed with the overrides given, exactly as DVC writes params.yaml."""
    import sys

    try:
        print(OmegaConf.to_yaml(compose(sys.argv[1:]), resolve=True), end="")
    except ConfigError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
