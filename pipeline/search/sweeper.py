"""The search loop, on Optuna's ask-and-tell interface, run by the project's Hydra sweeper
(hydra_plugins/mnist_pipeline/search_sweeper.py).

It asks the study for as many trials as the launcher runs at once, launches them as Hydra jobs
(`search.trial=<number>` and the drawn values as overrides), tells the study how each ended
(COMPLETE with its value, PRUNED, or FAIL), and when the trials are done trains the study's
best configuration again with `search.final_seeds` new seeds (`seed+1` ... `seed+n`): normal
runs, scored on the test set, the first time the search looks at it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from pipeline.search import space
from pipeline.search.pruning import EPOCHS, STATE, VALUE
from pipeline.search.report import record_trials
from pipeline.search.study import open_study, storage_url, task_config


def at_once(config: DictConfig) -> int:
    """How many trials the launcher runs at the same time: joblib's `n_jobs` (negative:
    relative to the cores), submitit's `array_parallelism`, else one."""
    launcher = OmegaConf.select(config, "hydra.launcher", default=None) or {}
    target = launcher.get("_target_", "")
    if target.endswith(".JoblibLauncher"):
        n_jobs = launcher.get("n_jobs") or 1
        return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
    if "submitit_launcher" in target:
        return max(1, launcher.get("array_parallelism") or 1)
    return 1


def search(sweeper: Any, arguments: list[str]) -> list[Any]:
    """Run `search.trials` trials, then the final runs; return the launcher's results."""
    config = sweeper.config
    cfg = task_config(config)
    distributions, fixed = space.build(space.merged(sweeper.params, arguments), config)
    url = storage_url(cfg)
    if cfg.search.storage is None:  # every job, in any process, on the same storage
        fixed.append(f"search.storage='{url}'")
    study = open_study(cfg, url)
    sweep_dir = Path(config.hydra.sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, sweep_dir / "multirun.yaml")
    returns, numbers = [], []
    while len(numbers) < cfg.search.trials:
        n = min(at_once(config), cfg.search.trials - len(numbers))
        asked = [_ask(study, distributions, fixed) for _ in range(n)]
        numbers += [trial.number for trial in asked]
        record_trials(sweep_dir, numbers)
        returns.append(_run(sweeper, study, asked, len(numbers) - n))
    if cfg.search.final_seeds:
        returns.append(_final_runs(sweeper, study, cfg, len(numbers)))
    return returns


def _ask(study: Any, distributions: space.Space, fixed: list[str]) -> Any:
    """A new trial, its values drawn, and its job's overrides kept with it (user attribute
    `overrides`): what the final runs of its configuration start from."""
    trial = study.ask(distributions)
    drawn = [space.override_text(k, v) for k, v in trial.params.items()]
    trial.set_user_attr("overrides", [*fixed, *drawn, f"search.trial={trial.number}"])
    return trial


def _state(name: str) -> Any:
    from optuna.trial import TrialState

    return TrialState[name]


def _run(sweeper: Any, study: Any, trials: list[Any], job: int) -> Any:
    """Launch the trials' jobs and tell the study how each ended. Trials whose jobs never
    returned (the launcher failed, Ctrl-C) are told FAIL: none is left RUNNING."""
    batch = [trial.user_attrs["overrides"] for trial in trials]
    try:
        sweeper.validate_batch_is_legal(batch)
        results = sweeper.launcher.launch(batch, initial_job_idx=job)
    except BaseException:
        for trial in trials:
            study.tell(trial, state=_state("FAIL"), skip_if_finished=True)
        raise
    for trial, result in zip(trials, results, strict=True):
        _tell(study, trial, returned(result))
    return results


def returned(result: Any) -> dict[str, Any] | None:
    """What a job returned (pipeline.train's metrics), None if it failed."""
    from hydra.core.utils import JobStatus

    if result.status is not JobStatus.COMPLETED or not isinstance(result.return_value, dict):
        return None
    return result.return_value


def _tell(study: Any, trial: Any, metrics: dict[str, Any] | None) -> None:
    """COMPLETE with the job's value, PRUNED (its value: the last it reported), or FAIL (no
    value: the job failed, or its training diverged)."""
    value = math.nan if metrics is None else float(metrics.get(VALUE, math.nan))
    state = "FAIL" if math.isnan(value) else metrics[STATE]
    if metrics is not None:
        trial.set_user_attr("epochs", metrics[EPOCHS])
    if state == "COMPLETE":
        study.tell(trial, value)
    else:
        study.tell(trial, state=_state(state))
    print(f"trial {trial.number}: {state} ({value:.4f})")


def _final_runs(sweeper: Any, study: Any, cfg: DictConfig, job: int) -> Any:
    """The study's best configuration trained again with seeds seed+1 ... seed+n, as normal
    runs (`search.final=true`): new seeds, so that its scores owe nothing to the seed it
    won with."""
    completed = [t for t in study.trials if t.state.name == "COMPLETE"]
    if not completed:
        print("no trial completed: no final runs")
        return []
    best = study.best_trial
    own = ("search.trial=", "seed=", "search.final=")
    base = [o for o in best.user_attrs["overrides"] if not o.startswith(own)]
    batch = [
        [*base, f"seed={cfg.seed + i}", "search.final=true"]
        for i in range(1, cfg.search.final_seeds + 1)
    ]
    print(f"best: trial {best.number} ({best.value:.4f}); its final runs: {len(batch)} seeds")
    sweeper.validate_batch_is_legal(batch)
    return sweeper.launcher.launch(batch, initial_job_idx=job)
