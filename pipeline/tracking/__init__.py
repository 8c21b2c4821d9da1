"""Every MLflow call of the project: where runs go, what each run records, reading runs back.

The only package that imports mlflow (a test checks), always inside its functions, so that
modules which only name a run start without it. MLflow only records runs; DVC decides what
runs. The store is `MLFLOW_TRACKING_URI` when set, otherwise `mlflow.db` (SQLite) at the
project root with artifacts in `mlruns/` beside it, both addressed by absolute path, so runs
that `dvc exp run --queue` starts in temporary copies of the project land in the project's
own store.

`store` (the URI, the check before work, retries), `params` (a run's name, params and tags),
`runs` (the active run and its records), `models` (the logged model, the registry), `search`
(runs read back), `offline` (`python -m pipeline.tracking log <job dir>`). Callers use the
names below as `tracking.X`.
"""

from pipeline.tracking.models import (
    CHAMPION,
    PACKAGE,
    alias_uri,
    load_model,
    register,
    run_model,
)
from pipeline.tracking.offline import log_job, main
from pipeline.tracking.params import dvc_dir_md5, flat_params, run_name, run_tags
from pipeline.tracking.runs import (
    active_run,
    active_uri,
    epoch_history,
    evaluation_files,
    log_artifact,
    log_datasets,
    log_metrics,
    log_outputs,
    log_params,
    log_text,
    log_to_run,
    per_class_key,
    set_tags,
)
from pipeline.tracking.search import (
    child_runs,
    create_run,
    end_run,
    log_artifacts_to,
    metric_history,
    search_runs,
    ui_link,
)
from pipeline.tracking.store import (
    ARTIFACTS_DIR,
    DEFAULT_EXPERIMENT,
    STORE_FILE,
    configure_client,
    experiment_id,
    retrying,
    store_root,
    tracking_uri,
)

__all__ = [
    "ARTIFACTS_DIR",
    "CHAMPION",
    "DEFAULT_EXPERIMENT",
    "PACKAGE",
    "STORE_FILE",
    "active_run",
    "active_uri",
    "alias_uri",
    "child_runs",
    "configure_client",
    "create_run",
    "dvc_dir_md5",
    "end_run",
    "epoch_history",
    "evaluation_files",
    "experiment_id",
    "flat_params",
    "load_model",
    "log_artifact",
    "log_artifacts_to",
    "log_datasets",
    "log_job",
    "log_metrics",
    "log_outputs",
    "log_params",
    "log_text",
    "log_to_run",
    "main",
    "metric_history",
    "per_class_key",
    "register",
    "retrying",
    "run_model",
    "run_name",
    "run_tags",
    "search_runs",
    "set_tags",
    "store_root",
    "tracking_uri",
    "ui_link",
]
