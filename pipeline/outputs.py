"""What a training leaves: its params and data logged to its MLflow run, and the job's files
(model, predictions, history, learning curves, run record), from which the run logs the rest.

The train stage (pipeline.fit) calls these around its training; Keras stays in pipeline.fit
and pipeline.models (tests/test_house.py): here the model is only called and saved.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import plots, predictions
from pipeline.callbacks import heldout_set, overfitting
from pipeline.config import Distribute
from pipeline.data.idx import file_sha256, read_manifest
from pipeline.data.prepared import split_digest
from pipeline.io import atomic_path, write_csv
from pipeline.paths import Paths
from pipeline.record import DatasetSplit, RunRecord
from pipeline.tracking.params import flat_params, run_name
from pipeline.tracking.runs import active_uri, log_datasets, log_params, set_tags


@dataclass
class TrainingData:
    """The prepared data as a training uses it: tensors split into the rows fitted on (with
    `y_clean`, the true labels, under label noise), validation and test; and the files'
    memory maps and metadata, which the run's records describe. The test set's are None
    for a search's trial, which never reads it."""

    x_fit: Any
    y_fit: Any
    x_val: Any
    y_val: Any
    x_test: Any | None
    y_test: Any | None
    y_clean: np.ndarray | None
    train_split: tuple[np.ndarray, np.ndarray]
    test_split: tuple[np.ndarray, np.ndarray] | None
    n_train: int
    meta: dict
    image: tuple[int, ...]

    @property
    def classes(self) -> int:
        return int(self.y_fit.shape[1])


def log_inputs(
    cfg: DictConfig, paths: Paths, data: TrainingData, model: Any, replicas: int, batch_size: int
) -> dict[str, Any]:
    """Log the run's params and datasets (and, mirrored, its replicas); return the datasets
    as the run record holds them: `source` and `splits`."""
    log_params(flat_params(cfg))
    splits = dataset_splits(cfg, data)
    # Where the data came from, as the download recorded it: a label in MLflow only (it
    # shapes nothing DVC tracks, so it is not part of the prepared data's record).
    manifest = read_manifest(paths.raw)
    source = manifest["source"] if manifest else str(paths.prepared)
    log_datasets(source, splits)
    # Where it trains: the devices holding (a replica of) the model's weights.
    weights = model.trainable_weights[0].value
    devices = [v.device for v in getattr(weights, "values", [weights])]
    set_tags({"devices": ",".join(d.rsplit("device:", 1)[-1] for d in devices)})
    if cfg.train.distribute is Distribute.mirrored:
        log_params({"distribute.replicas": replicas, "distribute.global_batch_size": batch_size})
        set_tags({"distribute.devices": ",".join(devices)})
    if (asked := gpus_asked(os.environ)) and not any("GPU" in d for d in devices):
        line = (
            f"SLURM gave this job GPUs ({asked}) but TensorFlow sees none: training on the "
            'CPU (install the gpu extra: pip install -e ".[gpu]")'
        )
        print(f"warning: {line}", file=sys.stderr)
        set_tags({"device_warning": line})
    return {"source": source, "splits": splits}


# What SLURM sets in a job given GPUs (--gpus-per-node and the like): counts, or lists of
# GPU indices or types.
_SLURM_GPUS = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS_PER_NODE",
               "SLURM_GPUS", "SLURM_GPUS_PER_TASK")  # fmt: skip


def gpus_asked(environ: Mapping[str, str]) -> str | None:
    """The SLURM variable that gave this job GPUs, as `NAME=value`, or None: a job given none
    (unset, empty, or 0) trains where TensorFlow puts it without a word."""
    for name in _SLURM_GPUS:
        value = environ.get(name, "").strip()
        if value and value.rsplit(":", 1)[-1] != "0":
            return f"{name}={value}"
    return None


def dataset_splits(cfg: DictConfig, data: TrainingData) -> list[DatasetSplit]:
    """The rows fitted on, the validation rows (the training set's last) if any, the test set
    if read."""
    meta, name = data.meta, cfg.data.name
    n_fit, n_val, n_train = len(data.x_fit), len(data.x_val), data.n_train
    x_shape, y_shape = data.train_split[0].shape[1:], data.train_split[1].shape[1:]
    fitted = split_digest(meta, "train", 0, n_fit)
    splits = [
        DatasetSplit(f"{name}-train", "training", fitted, (n_fit, *x_shape), (n_fit, *y_shape)),
    ]
    if data.x_test is not None:
        digest = split_digest(meta, "test", 0, len(data.x_test))
        test_x, test_y = data.test_split[0].shape, data.test_split[1].shape
        splits.append(DatasetSplit(f"{name}-test", "test", digest, test_x, test_y))
    if n_val:
        digest = split_digest(meta, "train", n_train - n_val, n_train)
        shapes = (n_val, *x_shape), (n_val, *y_shape)
        splits.insert(1, DatasetSplit(f"{name}-validation", "validation", digest, *shapes))
    return splits


def save(
    cfg: DictConfig,
    paths: Paths,
    model: Any,
    data: TrainingData,
    history: dict[str, list[float]],
    run: Any,
    datasets: dict[str, Any],
    tags: dict[str, str],
    timing: dict[str, float],
    requirements: list[str],
) -> RunRecord:
    """Write the job's files, whole: the model, its predictions, the history, the learning
    curves and the run record (returned). What the run logs next comes from them, and if the
    store fails they are the run (`python -m pipeline.tracking log <job dir>`)."""
    from pipeline.models.scoring import probabilities

    with atomic_path(paths.model) as tmp:
        model.save(tmp)
    # The saved model's class probabilities on what it was fitted on, the validation rows
    # and the test set (if read), with what identifies them: evaluate reports on these.
    model_sha256 = file_sha256(paths.model)
    digests = {split.context: split.digest for split in datasets["splits"]}
    start = time.perf_counter()
    scores = {"train": (probabilities(model, data.x_fit), digests["training"])}
    if data.x_test is not None:
        scores["test"] = (probabilities(model, data.x_test), digests["test"])
    if len(data.x_val):  # the final model (early stopping's restored weights) on validation
        scores["val"] = (probabilities(model, data.x_val), digests["validation"])
    timing["scoring_seconds"] = time.perf_counter() - start
    predictions.save(
        paths.predictions,
        run.info.run_id,
        model_sha256,
        scores,
        label_noise=(cfg.data.label_noise, cfg.seed),
    )
    _write_history(history, paths.history)
    plots.learning_curves(history, paths.learning_curves, run_name(cfg))
    record = _run_record(
        cfg, model, data, history, run, model_sha256, datasets, tags, timing, requirements
    )
    record.save(paths.run_info)
    return record


def _run_record(
    cfg: DictConfig,
    model: Any,
    data: TrainingData,
    history: dict[str, list[float]],
    run: Any,
    model_sha256: str,
    datasets: dict[str, Any],
    tags: dict[str, str],
    timing: dict[str, float],
    requirements: list[str],
) -> RunRecord:
    """The run record (models/run.json); `timing`: the fit's and the scoring's seconds;
    `requirements`: the logged model's (pip)."""
    lines: list[str] = []
    model.summary(print_fn=lambda line, **_: lines.append(line))
    metrics = {
        # How fast this machine trained (per-epoch scoring included), to compare runs across
        # machines and settings; benchmarks/bench.py reads them too.
        **timing,
        # The process's peak memory so far (a sweep's jobs share one process).
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        # Where overfitting began, on the held-out set the `heldout` tag names.
        **overfitting(history, heldout_set(cfg)),
    }
    return RunRecord(
        run_id=run.info.run_id,
        run_name=run.info.run_name,
        model_sha256=model_sha256,
        tracking_uri=active_uri(),
        experiment=cfg.tracking.experiment,
        tags=tags,
        params=flat_params(cfg),
        datasets=datasets,
        metrics=metrics,
        model={
            "pixels": int(np.prod(data.image)),
            "classes": data.classes,
            # uint8 pixels: test images, or training ones for a trial, which reads no test set
            "example": np.asarray((data.test_split or data.train_split)[0][:5]).tolist(),
            "requirements": requirements,
            "dataset": cfg.data.name,
            "class_names": list(cfg.data.classes),
            "image_shape": list(data.image),
        },
        config=OmegaConf.to_yaml(cfg),
        model_summary="\n".join(lines) + "\n",
    )


def _write_history(history: dict[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV, the format `dvc plots` draws."""
    rows = zip(*history.values(), strict=True)
    lines = ([i + 1, *(f"{v:.6f}" for v in row)] for i, row in enumerate(rows))
    write_csv(path, ["epoch", *history], lines)
