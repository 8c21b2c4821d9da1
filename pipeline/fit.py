"""Stage 3, train: fit the configured model, save it and its predictions, and record the run
in MLflow.

`dvc repro train` runs `python -m pipeline.fit`, on the config DVC wrote to params.yaml; the
evaluate stage reports on the saved predictions and completes the same MLflow run.
`python -m pipeline.train` (the command users run) calls `fit` too, between preparing the
data and evaluating.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import outputs, resume
from pipeline.callbacks import TRAIN_SCORED, EpochScoring, heldout_set, history_name
from pipeline.cli import SignalsHeld, run_stage
from pipeline.config import Distribute, sees_test_set, validate
from pipeline.data.noise import relabel
from pipeline.data.prepared import (
    image_shape,
    load_prepared,
    read_aligned,
    read_meta,
    split_validation,
)
from pipeline.errors import PipelineError, TrackingError, UnloggedRunError
from pipeline.models.training import epoch_backup, stop_when
from pipeline.outputs import TrainingData
from pipeline.paths import Paths
from pipeline.tracking.params import run_name, run_tags
from pipeline.tracking.runs import active_run, active_uri, epoch_history, log_outputs
from pipeline.tracking.store import Store, connect

# Trainings started in this process so far (see `_build_model`).
_trainings = 0


@dataclass
class FitResult:
    """What `fit` trained: its MLflow run, the saved model's path, the per-epoch metrics, and
    `unlogged`, why, when the store failed after training began (see `unlogged_error`)."""

    run_id: str
    model: Path
    history: dict[str, list[float]]
    unlogged: str | None = None


def build_from_config(
    cfg: DictConfig,
    image: tuple[int, ...],
    num_classes: int,
    total_steps: int | None = None,
    steps_per_execution: int = 1,
) -> Any:
    """The configured model, compiled with the configured optimizer (see pipeline.models).

    Args:
        image: The images' shape (the model takes them flattened).
        total_steps: Training steps in all (epochs times batches), for the `lr_schedule`.
        steps_per_execution: Batches run per call into TensorFlow.
    """
    from pipeline.models.build import build_model, build_optimizer, compile_model

    options = OmegaConf.to_container(cfg.model)
    model = build_model(
        options.pop("name"), image, num_classes, cfg.activation.value, cfg.activation_args,
        **options,
    )  # fmt: skip
    opt = OmegaConf.to_container(cfg.optimizer)
    optimizer = build_optimizer(
        opt.pop("name"), opt.pop("learning_rate"), cfg.lr_schedule.value, total_steps, **opt
    )
    return compile_model(model, optimizer, steps_per_execution)


def _strategy(cfg: DictConfig) -> tuple[Any, int]:
    """Where the model is built and how many replicas train it: `(scope, replicas)`.

    With `train.distribute=mirrored`, a `tf.distribute.MirroredStrategy` over every GPU, or,
    on a machine without GPUs, over `train.cpu_devices` logical CPU devices (TensorFlow fixes
    its devices when it starts, so this runs before any tensor exists). Otherwise no strategy
    at all: the seed's single-device training, untouched.
    """
    if cfg.train.distribute is not Distribute.mirrored:
        return contextlib.nullcontext(), 1
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        if cfg.train.cpu_devices > 1:
            print("train.cpu_devices is for machines without GPUs: mirroring over the GPUs")
        strategy = tf.distribute.MirroredStrategy()  # every visible GPU
    else:
        (cpu,) = tf.config.list_physical_devices("CPU")
        n = cfg.train.cpu_devices
        current = len(tf.config.get_logical_device_configuration(cpu) or [cpu])
        if current != n:
            try:
                tf.config.set_logical_device_configuration(
                    cpu, [tf.config.LogicalDeviceConfiguration()] * n
                )
            except RuntimeError:
                raise PipelineError(
                    f"train.cpu_devices={n}: TensorFlow already runs with {current} CPU "
                    "device(s) in this process; train each cpu_devices value in its own process"
                ) from None
        # MirroredStrategy() alone would take CPU:0 only.
        strategy = tf.distribute.MirroredStrategy(
            [d.name for d in tf.config.list_logical_devices("CPU")]
        )
    return strategy.scope(), strategy.num_replicas_in_sync


def fit(
    cfg: DictConfig,
    paths: Paths | None = None,
    entry_point: str = "api",
    tags: dict[str, str] | None = None,
    store: Store | None = None,
    on_epoch: Callable[[int, dict], bool] | None = None,
) -> FitResult:
    """Train the configured model on the prepared training set and log an MLflow run: on one
    device, or with `train.distribute=mirrored` a replica per device (see `_strategy`).

    Args:
        cfg: A composed config (validated here).
        paths: Where data is read and the run's files written (default: the project in cwd).
        entry_point: Recorded as a tag: `dvc`, `cli` or `api`.
        tags: More run tags, such as `mlflow.parentRunId` for a sweep's job.
        store: The store as the entry point checked it (default: checked here).
        on_epoch: Called after each epoch's scoring with the epoch (from 0) and its logs;
            True stops the training there (a search's pruner, pipeline.search.pruning).

    Raises:
        TrackingError: the store cannot be used (checked before any work).
    """
    cfg = validate(cfg)
    paths = (paths or Paths.project()).of(cfg.data.name)
    # The store first: one that cannot record fails here, in seconds, before any work.
    store = store or connect(paths.root, cfg.tracking.experiment)
    data, provenance, scope, replicas = _read_data(cfg, paths, entry_point)
    model, batch_size = _build_model(cfg, data, scope, replicas)
    heldout = heldout_set(cfg)
    progress = resume.claim(cfg, paths.root)  # kept until the run completes, to resume
    held = SignalsHeld()  # Ctrl-C and SIGTERM end the training early, then act (`_train`)
    scoring, callbacks = _callbacks(cfg, model, data, heldout, progress, on_epoch, held.pending)
    heldout_name = {"val": "validation", "test": "test"}[heldout]  # what the gaps measure
    tags = {**provenance, "job_dir": str(paths.out), "heldout": heldout_name, **(tags or {})}
    kept = False  # True once the job's files hold the whole run (see `outputs.save`)
    try:
        resuming = progress.resumed if progress else None
        with active_run(store, run_id=resuming, run_name=run_name(cfg), tags=tags) as run:
            if progress is not None:
                progress.started(run.info.run_id)
            datasets = outputs.log_inputs(cfg, paths, data, model, replicas, batch_size)
            resumed = run.info.run_id if progress and progress.resumed else None
            history, timing = _train(cfg, model, data, callbacks, batch_size, resumed, held)
            timing["epoch_scoring_seconds"] = scoring.seconds
            record = outputs.save(
                cfg, paths, model, data, history, run, datasets, tags, timing, _requirements()
            )
            kept = True
            log_outputs(paths, record.to_dict())
    except TrackingError as err:
        if not kept:
            raise
        # The run is whole in its files; the store only failed to record it.
        return FitResult(run.info.run_id, paths.model, history, unlogged=str(err))
    finally:
        if progress is not None and kept:
            progress.finish()
    print(f"MLflow run {run.info.run_name} ({run.info.run_id}) in {active_uri()}")
    return FitResult(run.info.run_id, paths.model, history)


def _read_data(
    cfg: DictConfig, paths: Paths, entry_point: str
) -> tuple[TrainingData, dict[str, str], Any, int]:
    """The prepared data, split and relabelled; the run's tags (`run_tags`); and
    where the model is built, for how many replicas (`_strategy`)."""
    train_split = load_prepared(paths, "train")
    # A search's trial never reads the test set (pipeline.config.sees_test_set).
    test_split = load_prepared(paths, "test") if sees_test_set(cfg) else None
    meta = read_meta(paths)
    image = image_shape(paths, meta)
    # Reading the data and hashing it for the run's tags need no interpreter lock, so they
    # run on another core while TensorFlow and Keras are imported (on one).
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_aligned, *train_split, *(test_split or ()))
        tagging = pool.submit(run_tags, paths.root, paths.prepared, entry_point)
        # Before the first tensor: logical CPU devices can only be made before TF starts.
        scope, replicas = _strategy(cfg)

        from pipeline.models.scoring import as_tensors

        x_train, y_train, *test = as_tensors(reading.result())
    x_test, y_test = test or (None, None)
    x_fit, y_fit, x_val, y_val = split_validation(
        x_train, y_train, cfg.val_split, cfg.data.fit_samples
    )
    # The labels fitted on: with `data.label_noise`, a fraction of them changed (see
    # pipeline.data.noise); validation and test labels are never changed.
    y_clean = None
    if cfg.data.label_noise:
        import tensorflow as tf

        y_clean = np.asarray(y_fit)
        y_fit = tf.constant(relabel(y_clean, cfg.data.label_noise, cfg.seed)[0])
    data = TrainingData(
        x_fit,
        y_fit,
        x_val,
        y_val,
        x_test,
        y_test,
        y_clean,
        train_split,
        test_split,
        len(x_train),
        meta,
        image,
    )
    return data, tagging.result(), scope, replicas


def _build_model(cfg: DictConfig, data: TrainingData, scope: Any, replicas: int) -> tuple[Any, int]:
    """The configured model, seeded, built in `scope`; and the images of each step."""
    import keras

    # Whatever an earlier model of this process left in Keras' global state (a sweep's jobs
    # share a process) is let go, then garbage-collected, so that a sweep's memory stays flat.
    global _trainings
    keras.backend.clear_session(free_memory=_trainings > 0)
    _trainings += 1
    keras.utils.set_random_seed(cfg.seed)  # Python, numpy and TensorFlow in one call
    # batch_size is per replica: a step takes batch_size x replicas images, split between
    # the replicas, and applies their averaged gradient with the configured learning rate.
    batch_size = cfg.batch_size * replicas
    steps = math.ceil(len(data.x_fit) / batch_size)
    # Many batches per call into TensorFlow, the same steps without returning to Python; not
    # under a distribution strategy, where Keras' multi-step loop fails (keras issue 19246).
    per_call = 1
    if cfg.train.distribute is Distribute.none:
        per_call = min(steps, cfg.train.steps_per_execution)
    with scope:  # the model's variables (and its optimizer's) live on every replica
        model = build_from_config(
            cfg,
            data.image,
            data.classes,
            total_steps=cfg.epochs * steps,
            steps_per_execution=per_call,
        )
    return model, batch_size


def _callbacks(
    cfg: DictConfig,
    model: Any,
    data: TrainingData,
    heldout: str,
    progress: resume.Progress | None,
    on_epoch: Callable[[int, dict], bool] | None,
    interrupted: Callable[[], bool],
) -> tuple[EpochScoring, list]:
    """The per-epoch scoring (see pipeline.callbacks); with `progress`, the backup of each
    epoch it saves; with `early_stopping.patience`, early stopping on the validation loss,
    restoring the best epoch's weights; then `on_epoch`, which may stop the training; last,
    the stop once `interrupted()` (an epoch cut short is neither scored nor reported)."""
    import keras

    scored = min(TRAIN_SCORED, len(data.x_fit))
    subset = (
        data.x_fit[:scored],
        np.asarray(data.y_fit[:scored]),
        None if data.y_clean is None else data.y_clean[:scored],
    )
    test = None if data.x_test is None else (data.x_test, np.asarray(data.y_test))
    scoring = EpochScoring(model, subset, test, heldout)

    def whole(on_epoch_end: Callable) -> Callable:  # an epoch a signal cut short: skipped
        return lambda epoch, logs=None: None if interrupted() else on_epoch_end(epoch, logs)

    callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=whole(scoring.on_epoch_end))]
    if cfg.early_stopping.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=cfg.early_stopping.patience,
                restore_best_weights=True,
                verbose=1,
            )
        )
    if on_epoch is not None:

        def stop_if_asked(epoch: int, logs: dict | None = None) -> None:
            if on_epoch(epoch, logs or {}):
                model.stop_training = True  # the run ends normally, after this epoch

        callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=whole(stop_if_asked)))
    if progress is not None:
        # First, so that a resume restores the weights and the epoch before anything else.
        scoring.backup = epoch_backup(progress.state)
        callbacks.insert(0, scoring.backup)
    return scoring, [*callbacks, stop_when(interrupted)]


def _train(
    cfg: DictConfig,
    model: Any,
    data: TrainingData,
    callbacks: list,
    batch_size: int,
    resumed: str | None,
    held: SignalsHeld,
) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Fit the model; return its per-epoch metrics and how fast it trained.

    Args:
        resumed: The MLflow run this training resumes, if it does.
        held: Holds Ctrl-C and SIGTERM during `fit`: the callbacks end the training early
            (`stop_when`), then the signal acts here, outside Keras' and TensorFlow's code
            (an interruption raised inside it was seen to corrupt the process's heap).
    """
    start = time.perf_counter()
    with held:
        fitted = model.fit(
            data.x_fit,
            data.y_fit,
            validation_data=(data.x_val, data.y_val) if len(data.x_val) else None,
            epochs=cfg.epochs,
            batch_size=batch_size,
            callbacks=callbacks,
            verbose=1 if sys.stdout.isatty() else 2,
        )
    seconds = time.perf_counter() - start
    if resumed:
        # The run's own record holds every epoch, those before the interruption too.
        history = epoch_history(resumed)
    else:
        history = {
            history_name(k): [float(v) for v in values]
            for k, values in sorted(fitted.history.items(), key=lambda i: history_name(i[0]))
        }
    timing = {
        "fit_seconds": seconds,
        "fit_samples_per_second": len(data.x_fit) * len(fitted.epoch) / seconds,
    }
    return history, timing


def _requirements() -> list[str]:
    """The logged model's requirements (pip): the versions that trained it."""
    import keras
    import tensorflow as tf

    return [
        f"tensorflow=={tf.__version__}",
        f"keras=={keras.__version__}",
        f"numpy=={np.__version__}",
    ]


def unlogged_error(reason: str, paths: Paths) -> UnloggedRunError:
    """The one line that ends a run whose store failed: why, and where its files are."""
    return UnloggedRunError(
        f"{reason}. The run's model, metrics and plots are in {paths.out}; once the store "
        f"answers, `python -m pipeline.tracking log {paths.out}` records them as a complete run"
    )


def main() -> None:
    """Train the model params.yaml configures (the DVC train stage)."""

    def stage(cfg: DictConfig) -> None:
        result = fit(cfg, Paths.project(), "dvc")
        if result.unlogged is not None:
            raise unlogged_error(result.unlogged, Paths.project())

    run_stage(stage, main.__doc__)


if __name__ == "__main__":
    main()
