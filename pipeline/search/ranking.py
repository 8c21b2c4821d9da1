"""`python -m pipeline.compare --search <study>`: a study's trials ranked by its objective,
read from the Optuna storage, and its latest final runs' summary, read from MLflow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.search.report import final_summary
from pipeline.search.study import STORE_FILE, load_study
from pipeline.tracking.search import runs_tagged
from pipeline.tracking.store import store_root

# How the states are listed: complete trials by value, then pruned ones, then failed ones.
ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "FAIL": 3}


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def trials_table(study: Any) -> pd.DataFrame:
    """One row per trial: number, state, value, epochs, params; the best first."""
    sign = -1 if study.direction.name == "MAXIMIZE" else 1
    rows = []
    for trial in study.get_trials(deepcopy=False):
        value = math.nan if trial.value is None else trial.value
        params = " ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
        rank = (ORDER.get(trial.state.name, 4), sign * value if not math.isnan(value) else 0)
        row = [trial.number, trial.state.name, value, trial.user_attrs.get("epochs", "-"), params]
        rows.append((rank, row))
    rows.sort(key=lambda r: r[0])
    columns = ["trial", "state", "value", "epochs", "params"]
    return pd.DataFrame([row for _, row in rows], columns=columns)


def show(uri: str, name: str, storage: str | None = None) -> None:
    """Print the study's trials, ranked, and its latest final runs' summary (from the tracking
    store at `uri`).

    Raises:
        ConfigError: no such study in the storage (one line naming the studies there).
    """
    url = storage or f"sqlite:///{store_root(Path.cwd()) / STORE_FILE}"
    study = load_study(name, url)
    objective = "minimised" if study.direction.name == "MINIMIZE" else "maximised"
    print(f"study {name} in {url}: {len(study.trials)} trials, the value {objective}")
    table = trials_table(study)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    finals = runs_tagged(uri, {"search.study": name, "search.final": "true"})
    if finals:  # the latest invocation's: its parent run holds them
        parent = finals[0].data.tags.get("mlflow.parentRunId")
        finals = [r for r in finals if r.data.tags.get("mlflow.parentRunId") == parent]
    _, line = final_summary(finals)
    print(f"\nfinal runs: {line}" if line else "\nno final runs of this study in MLflow")
