"""A search's space: Hydra's sweep overrides as Optuna distributions, and back.

    a,b,c  or  choice(a,b,c)      categorical (a list such as [256,256] as its Hydra text)
    range(a,b)  range(a,b,step)   int (float if any bound is) from a to the last value below
                                  b, by step: the values Hydra's range gives
    interval(a,b)                 float in [a, b]; int when both ends are ints
                                  (`int(interval(1,5))`) or the key holds an int (`epochs`)
    tag(log, interval(a,b))       the same on a log scale (a > 0)

Any other override is a fixed value that every trial gets as it is. The preset's
`hydra.sweeper.params` give the space; a command-line override of the same key wins: a value
fixes it, a sweep makes it a range of its own.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.errors import ConfigError

Space = dict[str, Any]  # key -> optuna.distributions.BaseDistribution


def parse(overrides: list[str]) -> list[Any]:
    """Hydra's parsed overrides (one line for a syntax error)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except HydraException as err:
        raise ConfigError(str(err).split("\n")[0]) from None


def merged(params: dict[str, str], arguments: list[str]) -> list[Any]:
    """The preset's params and the command line's overrides, the command line winning where
    both set a key (as Hydra's basic sweeper does)."""
    given = parse(arguments)
    keys = {o.key_or_group for o in given}
    own = parse([f"{k}={v}" for k, v in (params or {}).items() if k not in keys])
    return own + given


def build(overrides: list[Any], config: DictConfig | None = None) -> tuple[Space, list[str]]:
    """The distributions of the sweep overrides, by key, and the other overrides as text.

    Args:
        config: The composed config, which says which keys hold ints.

    Raises:
        ConfigError: a sweep Optuna cannot draw from (one line naming it).
    """
    space: Space = {}
    fixed = []
    for override in overrides:
        if override.is_sweep_override():
            space[override.key_or_group] = distribution(override, config)
        else:
            fixed.append(override.input_line)
    return space, fixed


def _holds_int(config: DictConfig | None, key: str) -> bool:
    value = None if config is None else OmegaConf.select(config, key, default=None)
    return isinstance(value, int) and not isinstance(value, bool)


def distribution(override: Any, config: DictConfig | None = None) -> Any:
    """One sweep override as an Optuna distribution.

    Raises:
        ConfigError: a glob or shuffle sweep, an empty range, a log scale reaching 0.
    """
    from hydra.core.override_parser.types import Transformer
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    line = override.input_line
    value = override.value()
    if getattr(value, "shuffle", False) or override.value_type.name == "GLOB_CHOICE_SWEEP":
        raise ConfigError(f"{line}: a search takes choice, range, interval or tag(log, ...)")
    if override.is_choice_sweep():
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if override.is_range_sweep():
        values = list(override.sweep_iterator())
        if not values:
            raise ConfigError(f"{line}: the range holds no value")
        if all(isinstance(v, int) for v in (value.start, value.stop, value.step)):
            return IntDistribution(values[0], values[-1], step=value.step)
        return FloatDistribution(values[0], values[-1], step=value.step)
    low, high, log = value.start, value.end, "log" in value.tags
    if not low < high:
        raise ConfigError(f"{line}: an interval needs its start below its end")
    if log and low <= 0:
        raise ConfigError(f"{line}: a log scale needs a positive start")
    ints = isinstance(low, int) and isinstance(high, int)
    if ints or _holds_int(config, override.key_or_group):
        return IntDistribution(int(low), int(high), log=log)
    return FloatDistribution(float(low), float(high), log=log)


def override_text(key: str, value: Any) -> str:
    """`key=value` as a Hydra override: a drawn value back on the command line."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = "null"
    else:
        text = str(value)  # a str is Hydra text already (see `distribution`)
    return f"{key}={text}"


def examples(dist: Any) -> list[Any]:
    """Values of `dist` to check a config with before the search starts: every choice, and a
    range's or interval's ends."""
    choices = getattr(dist, "choices", None)
    if choices is not None:
        return list(choices)
    return [dist.low, dist.high]
