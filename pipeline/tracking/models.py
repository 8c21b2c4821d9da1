"""The run's logged model (MLflow's `python_function` flavor) and the model registry."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import TrackingError
from pipeline.tracking.store import (
    DEFAULT_EXPERIMENT,
    configure_client,
    experiment_id,
    mlflow_client,
    retrying,
)

# The project's package, shipped with each logged model (MLflow's `code_paths`): the model's
# custom layers and its loader (pipeline.models.serving) come from it wherever it is loaded.
PACKAGE = Path(__file__).resolve().parents[1]  # pipeline/, above this package


def log_model_file(model_file: Path, about: dict[str, Any]) -> None:
    """Log the saved model as the run's MLflow model `model` (MLflow 3: a logged model, in the
    Models tab and the runs table's Models column), in MLflow's `python_function` flavor with
    its own loader and code, a signature and an input example: it loads with
    `mlflow.pyfunc.load_model`, `mlflow models predict` and `mlflow models serve` anywhere.

    Args:
        about: `pixels` and `classes` (the signature), `example` (a few prepared images as
            uint8 pixels), `requirements` (pip), and `dataset`, `class_names`, `image_shape`
            (kept as the model's metadata, for `pipeline.predict`).
    """
    import mlflow
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, about["pixels"]))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, about["classes"]))]),
    )
    example = np.asarray(about["example"], np.float32) / np.float32(255)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        shutil.copy(model_file, data / "model.keras")  # pipeline.models.serving.MODEL_FILE
        mlflow.pyfunc.log_model(
            name="model",
            loader_module="pipeline.models.serving",
            data_path=str(data),
            code_paths=[str(PACKAGE)],
            signature=signature,
            input_example=example,
            pip_requirements=about["requirements"],
            metadata={k: about[k] for k in ("dataset", "class_names", "image_shape")},
        )


# The model registry: registering a run's logged model, finding and loading models.

CHAMPION = "champion"


def _registry_failure(err: BaseException) -> TrackingError:
    return TrackingError(f"MLflow: {str(err).splitlines()[0]}")


def run_model(uri: str, run_id: str) -> tuple[Any, str]:
    """A run of the store at `uri` and the id of the model it logged.

    Raises:
        TrackingError: no such run in the store, or the run logged no model.
    """
    from mlflow.exceptions import MlflowException

    client = mlflow_client(uri)
    try:
        run = retrying(client.get_run, run_id)
    except MlflowException:
        raise TrackingError(f"no run {run_id} in {uri}") from None
    models = retrying(
        client.search_logged_models,
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}'",
    )
    models = [m for m in models if m.name == "model"]
    if not models:
        raise TrackingError(f"run {run_id} ({run.info.run_name}) logged no model to register")
    return run, models[-1].model_id


def register(uri: str, run_id: str, name: str, alias: str = CHAMPION) -> int:
    """Register the model run `run_id` logged as a new version of `name` in the store at `uri`
    (checked by the caller, `experiment_id`), and point `alias` at it. Returns the version."""
    import mlflow
    from mlflow.exceptions import MlflowException

    _, model_id = run_model(uri, run_id)
    client = mlflow_client(uri)
    # mlflow.register_model takes no store: it registers in MLflow's process-wide one.
    mlflow.set_tracking_uri(uri)
    try:
        version = mlflow.register_model(f"models:/{model_id}", name)
        retrying(client.set_registered_model_alias, name, alias, version.version)
    except MlflowException as err:
        raise _registry_failure(err) from None
    return int(version.version)


def alias_uri(uri: str, name: str, alias: str = CHAMPION) -> str | None:
    """`models:/<name>@<alias>` if the registry of the store at `uri` has that alias, else
    None."""
    from mlflow.exceptions import MlflowException

    experiment_id(uri, DEFAULT_EXPERIMENT)  # the store answers (checked in seconds)
    try:
        mlflow_client(uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return f"models:/{name}@{alias}"


def load_model(uri: str, model: str) -> tuple[Any, dict[str, Any]]:
    """An MLflow model (`models:/...`, `runs:/...`) of the store at `uri` as
    `python_function`: its `predict`, and the metadata it was logged with."""
    configure_client()  # before MLflow's first request
    import mlflow
    from mlflow.exceptions import MlflowException

    # mlflow.pyfunc.load_model takes no store: it resolves the model in the process-wide one.
    mlflow.set_tracking_uri(uri)
    try:
        loaded = mlflow.pyfunc.load_model(model)
    except (MlflowException, OSError) as err:
        raise TrackingError(f"cannot load {model}: {str(err).splitlines()[0]}") from None
    return loaded.predict, dict(loaded.metadata.metadata or {})
