"""The hyperparameter search's Hydra sweeper, `hydra/sweeper=optuna_search` (conf/search/).

Hydra imports every module of `hydra_plugins` when it starts (so do DVC's compose step and
every `python -m pipeline.train`): this one stays thin, the sweeper's config and a class that
hands the work to pipeline.search.sweeper, imported (with Optuna) only when a search runs.
"""

# No `from __future__ import annotations`: Hydra's scan runs this module outside sys.modules,
# where a dataclass cannot look its string annotations up.
from dataclasses import dataclass
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from pipeline.schema import SEARCH_SWEEPER


@dataclass
class SearchSweeperConf:
    _target_: str = SEARCH_SWEEPER
    # The search space: key -> a choice, range or interval (pipeline/search/space.py).
    params: dict[str, str] | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_search", node=SearchSweeperConf, provider="mnist_pipeline"
)


class SearchSweeper(Sweeper):
    """Trials asked from an Optuna study, run through Hydra's configured launcher."""

    def __init__(self, params: dict[str, str] | None = None) -> None:
        self.params = dict(params or {})
        self.hydra_context: HydraContext | None = None
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from pipeline.search.sweeper import search

        return search(self, arguments)
