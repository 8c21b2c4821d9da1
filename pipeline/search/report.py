"""What a search's parent MLflow run gets: its name and tags when it opens (pipeline.sweep's
MlflowSweep opens it, as for every sweep), and when the search ends its trials' states, the
best trial's params and value, Optuna's plots, `trials.csv`, and the final runs' summary.
Everything reaches MLflow through pipeline.tracking.
"""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from pipeline import stats
from pipeline.io import write_json, write_text
from pipeline.search.study import open_study, storage_url, task_config
from pipeline.tracking.search import log_artifacts_to, record_on_run

# The numbers of the trials one invocation ran, in its sweep directory (`record_trials`).
TRIALS_FILE = "search.json"


def parent_run(config: DictConfig) -> tuple[str, dict[str, str]]:
    """The parent run's name ("search mlp-mnist, trials 0-29": the numbers this invocation
    will give, unless another process shares the study) and tags."""
    cfg = task_config(config)
    study = open_study(cfg)
    first = len(study.get_trials(deepcopy=False))
    last = first + cfg.search.trials - 1
    name = f"search {study.study_name}, trials {first}-{last}"
    return name, {"search.study": study.study_name, "search.storage": storage_url(cfg)}


def record_trials(sweep_dir: Path, numbers: list[int]) -> None:
    """Keep the trial numbers this invocation asked for, as they are asked."""
    write_json(Path(sweep_dir) / TRIALS_FILE, {"trials": numbers})


def _asked(sweep_dir: Path) -> list[int]:
    path = Path(sweep_dir) / TRIALS_FILE
    return json.loads(path.read_text())["trials"] if path.is_file() else []


def finish(config: DictConfig, uri: str, run_id: str, children: list[Any]) -> tuple[str, str]:
    """Report the search on its parent run (in the store at `uri`); return its status and a
    summary for its tag `jobs`. FAILED when a final run failed or is missing; trials that
    failed or were pruned are the search's findings, not its failure."""
    cfg = task_config(config)
    study = open_study(cfg)
    sweep_dir = Path(config.hydra.sweep.dir)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    asked = [n for n in _asked(sweep_dir) if n in trials]
    _tag_trial_runs(uri, children, trials)
    states = Counter(trials[n].state.name for n in asked)
    summary = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    tags = {"search.trials": _numbers(asked), "search.states": summary}
    params, metrics = _best(study)
    files, note = _artifacts(study, sweep_dir / "search")
    if note:
        tags["search.importances"] = note
    log_artifacts_to(uri, run_id, files, "search")
    finals = [c for c in children if c.data.tags.get("search.final") == "true"]
    final_metrics, line = final_summary(finals)
    record_on_run(uri, run_id, params, {**metrics, **final_metrics}, tags)
    print(f"search {study.study_name}: trials {_numbers(asked)}: {summary}")
    if line:
        print(line)
    wanted = cfg.search.final_seeds if "best_value" in metrics else 0
    done = sum(c.info.status == "FINISHED" for c in finals)
    status = "FAILED" if done < wanted else "FINISHED"
    return status, f"{summary}; {done} of {wanted} final runs finished"


def _numbers(numbers: list[int]) -> str:
    """`0-29`, or the list where another process took numbers in between."""
    if numbers and numbers == list(range(numbers[0], numbers[-1] + 1)):
        return f"{numbers[0]}-{numbers[-1]}"
    return ",".join(map(str, numbers))


def _tag_trial_runs(uri: str, children: list[Any], trials: dict[int, Any]) -> None:
    """Each trial's run tagged with how the study recorded it, and the epochs it ran."""
    for run in children:
        number = run.data.tags.get("search.trial")
        if number is None or int(number) not in trials:
            continue
        trial = trials[int(number)]
        tags = {"search.state": trial.state.name}
        if "epochs" in trial.user_attrs:
            tags["search.epochs"] = str(trial.user_attrs["epochs"])
        record_on_run(uri, run.info.run_id, tags=tags)


def _best(study: Any) -> tuple[dict[str, str], dict[str, float]]:
    """The study's best trial as params `best.<key>` (and `best.trial`) and `best_value`."""
    if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
        return {}, {}
    best = study.best_trial
    params = {f"best.{k}": str(v) for k, v in best.params.items()}
    params["best.trial"] = str(best.number)
    return params, {"best_value": float(best.value)}


def _varying(study: Any) -> bool:
    """Whether 2 complete trials or more differ in their params (importances need them)."""
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return len({str(sorted(t.params.items())) for t in complete}) >= 2


def _artifacts(study: Any, out: Path) -> tuple[list[Path], str | None]:
    """trials.csv, the optimization history and (with 2 complete trials whose params vary)
    the parameter importances, as Optuna draws them; and why importances were skipped."""
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.exceptions import ExperimentalWarning
    from optuna.importance import PedAnovaImportanceEvaluator

    out.mkdir(parents=True, exist_ok=True)
    files = [out / "trials.csv"]
    write_text(files[0], study.trials_dataframe().to_csv(index=False, lineterminator="\n"))
    drawings = {"optimization_history.png": vis.plot_optimization_history}
    note = "skipped: parameter importances need 2 complete trials whose params vary"
    if _varying(study):
        # PED-ANOVA: Optuna's own importance evaluator, the one that needs no scikit-learn.
        evaluator = PedAnovaImportanceEvaluator()
        drawings["param_importances.png"] = partial(vis.plot_param_importances, evaluator=evaluator)
        note = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        for name, draw in drawings.items():
            try:
                figure = draw(study).figure
            except (ValueError, RuntimeError) as err:  # too few trials for the evaluator
                note = f"skipped {name}: {err}"
                continue
            figure.savefig(out / name, dpi=100, bbox_inches="tight")
            plt.close(figure)
            files.append(out / name)
    return files, note


def final_summary(finals: list[Any]) -> tuple[dict[str, float], str | None]:
    """The final runs' validation and test accuracy: mean and 95% t interval of each
    (`final_<metric>_mean`, `_ci_low`, `_ci_high`), and the line the search prints."""
    runs = [r for r in finals if r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics]
    if not runs:
        return {}, None
    metrics, cells = {}, {}
    for name in ("val_accuracy", "test_accuracy"):
        found = stats.summary([r.data.metrics[name] for r in runs])
        values = {"mean": found.mean, "ci_low": found.ci_low, "ci_high": found.ci_high}
        metrics.update({f"final_{name}_{k}": v for k, v in values.items() if not math.isnan(v)})
        half = (found.ci_high - found.ci_low) / 2
        cells[name] = f"{found.mean:.4f}" + ("" if math.isnan(half) else f" ± {half:.4f}")
    line = (
        f"chosen on validation: val {cells['val_accuracy']}; test, looked at once: "
        f"{cells['test_accuracy']} (n={len(runs)}; ± is the 95% interval's half-width)"
    )
    return metrics, line
