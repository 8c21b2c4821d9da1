"""Every MLflow call of the project: where runs go, what each run records, reading runs back.

The only package that imports mlflow (a test checks), always inside its functions, so that
modules which only name a run start without it. MLflow only records runs; DVC decides what
runs. The store is `MLFLOW_TRACKING_URI` when set, otherwise `mlflow.db` (SQLite) at the
project root with artifacts in `mlruns/` beside it, both addressed by absolute path, so runs
that `dvc exp run --queue` starts in temporary copies of the project land in the project's
own store.

`store` (the URI, the check before work, retries), `params` (a run's name, params and tags),
`runs` (the active run and its records), `models` (the logged model, the registry), `search`
(runs read back), `offline` (`python -m pipeline.tracking log <job dir>`), `liveness` (where a
run runs, its heartbeat, `python -m pipeline.tracking reap`). Callers import what they use
from those modules.
"""
