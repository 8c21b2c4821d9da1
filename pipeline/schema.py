"""The configuration schema: every key's type and allowed values.

The values themselves live in `conf/` (one source of truth); these dataclasses only say what a
value may be. They are registered in Hydra's ConfigStore, so a bad override fails while Hydra
composes, both in `python -m pipeline.train` and in DVC's compose step for `dvc exp run`
(through `hydra_plugins/`). `pipeline.config.validate` adds the range checks that types alone
cannot express.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from omegaconf import MISSING, OmegaConf

from pipeline.activations import ACTIVATIONS, ARGUMENTS

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


class Objective(Enum):
    """What a search maximises or minimises: a validation metric at the best epoch."""

    val_accuracy = "val_accuracy"
    val_loss = "val_loss"


class Sampler(Enum):
    tpe = "tpe"  # Optuna's Tree-structured Parzen Estimator, seeded from `seed`
    random = "random"


class Pruner(Enum):
    median = "median"  # stop a trial whose epoch is worse than the median of earlier trials'
    none = "none"


@dataclass
class SearchConfig:
    """A hyperparameter search (`+search=mlp`, pipeline/search/). `trial` and `final` are a
    job's place in it, set by the search for each job it launches."""

    trials: int = 30  # per invocation: the study keeps every earlier trial
    objective: str = "val_accuracy"  # a validation metric (checked in pipeline.config)
    study: str | None = None  # null: <model>-<dataset>, e.g. mlp-mnist
    storage: str | None = None  # null: sqlite:///<project root>/optuna.db
    sampler: Sampler = Sampler.tpe
    pruner: Pruner = Pruner.median
    startup_trials: int = 5  # complete trials before the pruner stops any
    final_seeds: int = 5  # the winner retrained with this many new seeds; 0: none
    trial: int | None = None  # this job is the study's trial of this number
    final: bool = False  # this job is one of the winner's final runs


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
    search: SearchConfig = field(default_factory=SearchConfig)


# The config-group choices and their schemas; each also has its builder in pipeline/models/
# and its YAML file in conf/ (a test checks that the three agree).
MODELS: dict[str, type] = {"mlp": MLPConfig, "cnn": CNNConfig}
OPTIMIZERS: dict[str, type] = {"rmsprop": RMSpropConfig, "adam": AdamConfig, "sgd": SGDConfig}
# Where the schemas live in Hydra's ConfigStore: apart from the groups' own choices, so that
# `--help` and `optimizer=glob(*)` see only the YAML files.
SCHEMA_GROUP = "schema"
# The Hydra sweeper of a hyperparameter search (`hydra/sweeper=optuna_search`).
SEARCH_SWEEPER = "hydra_plugins.mnist_pipeline.search_sweeper.SearchSweeper"


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
        return choice_list(Activation.__members__)
    return choice_list(sorted(p.stem for p in (CONF_DIR / what).glob("*.yaml")))


def choice_list(values: Any) -> str:
    return ", ".join(str(v) for v in values)
