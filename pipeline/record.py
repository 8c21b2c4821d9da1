"""A run's record, models/run.json: what the train stage leaves beside the model for the
evaluate stage, for benchmarks and for logging the run later (`pipeline.tracking.log_job`).

No TensorFlow or MLflow here: the evaluate stage reads the record without either.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from pipeline.errors import ModelError
from pipeline.io import write_json

RETRAIN = "re-run the train stage (`dvc repro train`)"


class DatasetSplit(NamedTuple):
    """One split a run used, as MLflow records it (`tracking.log_datasets`): `context` is
    `training`, `validation` or `test`; the shapes are of the float32 arrays, rows first."""

    name: str
    context: str
    digest: str
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]


@dataclass
class RunRecord:
    """models/run.json, its keys in the order the file holds them."""

    run_id: str
    run_name: str
    model_sha256: str
    # What logging the job later needs (tracking.log_job): where, and what.
    tracking_uri: str
    experiment: str
    tags: dict[str, str]
    params: dict[str, Any]
    # `source` (where the data came from) and `splits` (DatasetSplit each; lists once read).
    datasets: dict[str, Any]
    # Fit speed, scoring times, peak memory and where overfitting began (see pipeline.fit).
    metrics: dict[str, float]
    # What the logged model needs (tracking.log_outputs): input, output, example, requirements.
    model: dict[str, Any]
    config: str
    model_summary: str

    def to_dict(self) -> dict[str, Any]:
        """The record as pipeline.tracking reads it: a dict, by key."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def save(self, path: Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        """The record in `path`.

        Raises:
            ModelError: `path` is missing, cut off or not a run record.
        """
        try:
            data = json.loads(path.read_text())
            missing = [f.name for f in fields(cls) if f.name not in data]
        except (OSError, ValueError, TypeError) as err:
            raise ModelError(f"cannot read {path} ({err}); {RETRAIN}") from None
        if missing:
            raise ModelError(f"cannot read {path} (no {', '.join(missing)}); {RETRAIN}")
        return cls(**{f.name: data[f.name] for f in fields(cls)})
