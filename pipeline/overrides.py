"""A Hydra command line checked before Hydra starts: every job it would launch composed and
validated, so that bad input is one line and a non-zero exit before anything is written, and
a sweep the configured sweeper cannot expand is refused before its parent run opens.
"""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import check_search_split, compose, hydra_error, one_line, validate
from pipeline.errors import ConfigError
from pipeline.schema import CONF_DIR, SEARCH_SWEEPER

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


def _parsed(args: list[str]) -> tuple[list[Any], str | None, DictConfig]:
    """The command line's overrides parsed, with a multirun config's own sweep
    (`hydra.sweeper.params`, the study and search presets) for the keys the command line
    does not set (as Hydra's sweeper does); the sweeper's class (None unless a multirun: -m,
    or a preset's `hydra.mode`); and the config of the command line's plain values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from hydra.types import RunMode

    parser = OverridesParser.create()
    sweeper = None
    try:
        parsed = parser.parse_overrides([a for a in args if not a.startswith("-")])
        first = [o.input_line for o in parsed if not o.is_sweep_override()]
        composed = compose(first, hydra=True)
        hydra = composed.hydra
        if "-m" in args or "--multirun" in args or hydra.mode == RunMode.MULTIRUN:
            sweeper = hydra.sweeper.get("_target_", BASIC_SWEEPER)
            given = {o.get_key_element() for o in parsed}
            own = [f"{k}={v}" for k, v in (hydra.sweeper.params or {}).items() if k not in given]
            parsed += parser.parse_overrides(own)
    except HydraException as err:
        raise hydra_error(err) from None
    return parsed, sweeper, composed


def _search_jobs(parsed: list[Any], config: DictConfig) -> list[list[str]]:
    """The jobs that check a search's space: every choice and every range's or interval's
    ends, each beside the other keys' first values (one key at a time: the product of a
    search space is far too many configs to compose)."""
    from pipeline.search import space

    distributions, fixed = space.build(parsed, config)
    values = [
        [space.override_text(key, v) for v in space.examples(dist)]
        for key, dist in distributions.items()
    ]
    base = [options[0] for options in values]
    jobs = [[*fixed, *base]]
    for i, options in enumerate(values):
        jobs += [[*fixed, *base[:i], v, *base[i + 1 :]] for v in options[1:]]
    return jobs


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
    parsed, sweeper, config = _parsed(args)
    searching = sweeper == SEARCH_SWEEPER
    if searching:
        jobs = _search_jobs(parsed, config)
    else:
        jobs = list(itertools.product(*sweep_values(parsed, sweeper)))
    parser = OverridesParser.create()
    # Jobs that differ only in plain values (not in config group choices: model=cnn,
    # +experiment=width) are composed once, their values then set on copies, as Hydra does.
    groups = {p.name for p in CONF_DIR.iterdir() if p.is_dir()}
    composed: dict[tuple[str, ...], DictConfig] = {}
    for job in jobs:
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
            raise one_line(err) from None
        if searching:  # first: said for a search, not as early stopping's need
            check_search_split(cfg)
            from pipeline.search.study import check_storage

            check_storage(cfg)
        validate(cfg)
