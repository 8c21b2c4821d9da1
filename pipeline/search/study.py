"""A search's Optuna study: where it is stored, how it draws and prunes, which way it goes.

The study lives in an Optuna storage (default `sqlite:///<project root>/optuna.db`, beside
mlflow.db; any Optuna storage URL), so that running the same command again continues it and
several processes (joblib's, SLURM's, two shells) share it: Optuna numbers each new trial
inside a transaction of the storage, so no number is repeated or skipped.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.config import check_search_split, validate
from pipeline.errors import ConfigError
from pipeline.tracking.store import created_once, store_root

STORE_FILE = "optuna.db"
# How long a SQLite writer waits for another process's lock before it fails.
SQLITE_TIMEOUT = 60
# How often opening a new server database is tried while another process creates its tables.
CREATE_ATTEMPTS = 3


def task_config(config: DictConfig) -> DictConfig:
    """The validated task config of a composed config that holds Hydra's too.

    Raises:
        ConfigError: a bad value, or a search without validation rows.
    """
    cfg = validate(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]))
    check_search_split(cfg)
    check_storage(cfg)
    return cfg


def check_storage(cfg: DictConfig) -> None:
    """`search.storage` holds no password: the URL is recorded with the runs (the parent's
    tags, each run's config.yaml), so a server's password goes in PGPASSWORD or ~/.pgpass.

    Raises:
        ConfigError: a password in the URL (said with `***` in its place).
    """
    url = urllib.parse.urlsplit(cfg.search.storage or "")
    if url.password:
        hidden = url._replace(netloc=url.netloc.replace(f":{url.password}@", ":***@"))
        raise ConfigError(
            f"search.storage: invalid value {hidden.geturl()!r}; must be a URL without a "
            "password (give it in PGPASSWORD or ~/.pgpass)"
        )


def storage_url(cfg: DictConfig, root: Path | None = None) -> str:
    """`search.storage`, or the project's SQLite file (the original project's, for a run
    in one of DVC's queue copies, as the MLflow store)."""
    return cfg.search.storage or f"sqlite:///{store_root(root or Path.cwd()) / STORE_FILE}"


def study_name(cfg: DictConfig) -> str:
    """`search.study`, or `<model>-<dataset>` (the presets name theirs so: `mlp-mnist`)."""
    return cfg.search.study or f"{cfg.model.name}-{cfg.data.name}"


def direction(objective: str) -> str:
    """Accuracy is maximised, a loss minimised."""
    return "minimize" if objective.endswith("loss") else "maximize"


def _storage(url: str) -> Any:
    """The Optuna storage at `url`; SQLite's with a busy timeout, so that processes sharing
    the file wait for each other's writes instead of failing.

    Two processes that open a new server database (PostgreSQL) at once both create Optuna's
    tables, and one fails on the other's; by the next attempt they are there."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT}} if url.startswith("sqlite") else {}
    for attempt in range(CREATE_ATTEMPTS):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
        except (IntegrityError, ProgrammingError):
            if attempt == CREATE_ATTEMPTS - 1:
                raise
            time.sleep(1)


def pruner(cfg: DictConfig) -> Any:
    """`search.pruner`: median stops a trial whose epoch's value is worse than the median of
    the earlier trials' at the same epoch, once `search.startup_trials` have completed."""
    import optuna

    if cfg.search.pruner.name == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=cfg.search.startup_trials)


def sampler(cfg: DictConfig) -> Any:
    """`search.sampler`, seeded from `seed` and each trial's number (`TrialSeeded`)."""
    import optuna

    startup = cfg.search.startup_trials

    def make(seed: int) -> Any:
        if cfg.search.sampler.name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)

    return trial_seeded(make, cfg.seed)


def open_study(cfg: DictConfig, url: str | None = None) -> Any:
    """The config's study, created if new (`load_if_exists`: the same command continues it).

    Raises:
        ConfigError: the study exists with the other direction (another objective).
    """
    import optuna

    url = url or storage_url(cfg)
    name, wanted = study_name(cfg), direction(cfg.search.objective)
    with created_once(url):
        study = optuna.create_study(
            storage=_storage(url),
            study_name=name,
            sampler=sampler(cfg),
            pruner=pruner(cfg),
            direction=wanted,
            load_if_exists=True,
        )
    if study.direction.name.lower() != wanted:
        raise ConfigError(
            f"search.objective: invalid value {cfg.search.objective!r}; study {name!r} in "
            f"{url} was made to {study.direction.name.lower()} its objective (name a new "
            "search.study)"
        )
    return study


def load_study(name: str, url: str, pruner: Any = None) -> Any:
    """An existing study (a trial's job, compare), never created here.

    Raises:
        ConfigError: no study of that name in the storage (the names there).
    """
    import optuna

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise ConfigError(f"no study {name!r}: no storage at {url}")
    with created_once(url):
        store = _storage(url)
    names = [s.study_name for s in optuna.get_all_study_summaries(store, include_best_trial=False)]
    if name not in names:
        known = ", ".join(sorted(names)) or "none"
        raise ConfigError(f"no study {name!r} in {url}; its studies: {known}")
    return optuna.load_study(study_name=name, storage=store, pruner=pruner)


def trial_seeded(make: Any, seed: int) -> Any:
    """A sampler drawing each trial with `make(seed + trial number)`: a resumed study or a
    second process draws new values, not the first trials' again, and the same study
    draws the same values for the same trial numbers."""
    from optuna.samplers import BaseSampler

    class TrialSeeded(BaseSampler):
        def __init__(self) -> None:
            self._sampler = make(seed)

        def before_trial(self, study: Any, trial: Any) -> None:
            self._sampler = make(seed + trial.number)
            self._sampler.before_trial(study, trial)

        def infer_relative_search_space(self, study: Any, trial: Any) -> Any:
            return self._sampler.infer_relative_search_space(study, trial)

        def sample_relative(self, study: Any, trial: Any, space: Any) -> Any:
            return self._sampler.sample_relative(study, trial, space)

        def sample_independent(self, study: Any, trial: Any, name: str, dist: Any) -> Any:
            return self._sampler.sample_independent(study, trial, name, dist)

        def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
            self._sampler.after_trial(study, trial, state, values)

    return TrialSeeded()


def running_trial(cfg: DictConfig) -> Any:
    """The study's trial number `search.trial`, as its job (in any process) reports to it."""
    import optuna

    url, name = storage_url(cfg), study_name(cfg)
    with created_once(url):
        store = _storage(url)
    study = optuna.load_study(study_name=name, storage=store, pruner=pruner(cfg))
    study_id = store.get_study_id_from_name(name)
    trial_id = store.get_trial_id_from_study_id_trial_number(study_id, cfg.search.trial)
    return optuna.trial.Trial(study, trial_id)
