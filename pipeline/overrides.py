"""A Hydra command line checked before Hydra starts: every job it would launch composed and
validated, so that bad input is one line and a non-zero exit before anything is written, and
a sweep the configured sweeper cannot expand is refused before its parent run opens.
"""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.config import compose, hydra_error, one_line, validate
from pipeline.errors import ConfigError
from pipeline.schema import CONF_DIR

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
            raise one_line(err) from None
        validate(cfg)
