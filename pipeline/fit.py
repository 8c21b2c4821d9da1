"""Stage 3, train: fit the configured model, save it and its predictions, and record the run
in MLflow.

`dvc repro train` runs `python -m pipeline.fit`, on the config DVC wrote to params.yaml; the
evaluate stage reports on the saved predictions and completes the same MLflow run.
`python -m pipeline.train` (the command users run) calls `fit` too, between preparing the
data and evaluating.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import math
import resource
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import plots, predictions, tracking
from pipeline.cli import run_stage, signals_held
from pipeline.config import Distribute, validate
from pipeline.data.idx import file_sha256, read_manifest
from pipeline.data.noise import relabel
from pipeline.data.prepared import (
    image_shape,
    load_prepared,
    read_aligned,
    read_meta,
    split_digest,
    split_validation,
)
from pipeline.errors import DivergedError, PipelineError, TrackingError, UnloggedRunError
from pipeline.io import atomic_path, write_json
from pipeline.paths import Paths

# Where unfinished trainings keep their progress (weights, optimizer state, epoch, run id).
RESUME_DIR = ".resume"
# Trainings started in this process so far (see `fit`).
_trainings = 0


# Training images scored after every epoch with that epoch's final weights, as the test set
# is: Keras' own per-epoch `accuracy` averages over the epoch while the weights change (after
# the seed's first epoch it reads 0.924 where the test set scores 0.961), so it is no train
# accuracy to set against a held-out one. 10,000 images give it to about +-0.1%.
TRAIN_SCORED = 10_000
# Keras' running values, renamed: `train_loss` and `train_accuracy` are the scored ones.
_RUNNING = {"loss": "train_running_loss", "accuracy": "train_running_accuracy"}


def history_name(keras_name: str) -> str:
    """An epoch metric's name in the history and in MLflow (`epoch/<name>`): Keras' running
    `loss` and `accuracy` become `train_running_*`; every other name is already its split's."""
    return _RUNNING.get(keras_name, keras_name)


def heldout_set(cfg: DictConfig) -> str:
    """Where a run's overfitting is measured: `val` (validation) when `val_split > 0`, else
    `test`, the prefix of its epoch metrics."""
    return "val" if cfg.val_split > 0 else "test"


def overfitting(history: dict[str, list[float]], heldout: str) -> dict[str, float]:
    """Where overfitting began: `best_epoch` (from 1), the epoch of the lowest held-out loss;
    `epochs_past_best`, the epochs trained after it; `heldout_loss_rise`, how far the held-out
    loss rose from its lowest to the last epoch."""
    losses = history[f"{heldout}_loss"]
    best = min(range(len(losses)), key=losses.__getitem__)  # the first, on a tie
    return {
        "best_epoch": best + 1,
        "epochs_past_best": len(losses) - 1 - best,
        "heldout_loss_rise": losses[-1] - losses[best],
    }


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


def _epoch_callback(
    train: tuple[Any, np.ndarray, np.ndarray | None], test: tuple[Any, np.ndarray], heldout: str
) -> Any:
    """The callback that scores each epoch: `train` is a fixed subset of the fitted images
    with the labels fitted on and (with label noise) the clean ones; `test` the test set."""
    import keras

    from pipeline.models.scoring import probabilities

    x_train, y_train, y_clean = train
    x_test, y_test = test

    class EpochMetrics(keras.callbacks.Callback):
        """Scores the training subset and the test set with the weights each epoch ends with,
        adds the scores and the gaps to the epoch's logs (and so to the History), and logs
        every epoch metric to MLflow as `epoch/<name>`, step = epoch (from 1).

        Names: `train_*` (the subset, on the labels fitted on), `train_clean_*` (on the
        true labels, with label noise), `test_*`, Keras' `val_*`, `train_running_*` (Keras'
        running averages), and `generalization_gap` (train minus held-out accuracy) and
        `loss_gap` (held-out minus train loss): overfitting is where these grow.
        """

        # Seconds spent scoring, over all epochs: measurement, not training (the run record's
        # `epoch_scoring_seconds`).
        seconds = 0.0
        # The backup of the last completed epoch (for `train.resume`), if kept: written here,
        # with the epoch's logging, so that an interruption never leaves one without the other.
        backup: Any = None

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            start = time.perf_counter()
            logs = logs if logs is not None else {}
            if not math.isfinite(logs.get("loss", 0.0)):
                # Nothing more can be learnt; stop, and fail the run with the reason.
                raise DivergedError(f"loss became NaN at epoch {epoch + 1}")
            # Scored as evaluate scores, batch by batch: Keras' own `evaluate` spent more
            # time building its dataset and prediction function each epoch than scoring.
            probs = probabilities(self.model, x_train)
            logs["train_accuracy"], logs["train_loss"] = predictions.accuracy_and_loss(
                probs, y_train
            )
            if y_clean is not None:
                scores = predictions.accuracy_and_loss(probs, y_clean)
                logs["train_clean_accuracy"], logs["train_clean_loss"] = scores
            scores = predictions.accuracy_and_loss(probabilities(self.model, x_test), y_test)
            logs["test_accuracy"], logs["test_loss"] = scores
            logs["generalization_gap"] = logs["train_accuracy"] - logs[f"{heldout}_accuracy"]
            logs["loss_gap"] = logs[f"{heldout}_loss"] - logs["train_loss"]
            self.seconds += time.perf_counter() - start
            metrics = {f"epoch/{history_name(k)}": float(v) for k, v in logs.items()}
            # An epoch backed up is an epoch in the run, and the other way round: a resume
            # continues after the last epoch the run holds, having lost none.
            with signals_held():
                if self.backup is not None:
                    self.backup.save(epoch, logs)
                tracking.log_metrics(metrics, step=epoch + 1, wait=False)

    return EpochMetrics()


def _epoch_backup(directory: Path) -> Any:
    """Keras' BackupAndRestore into `directory`, but saving only when told to (`save`): the
    epoch callback saves it together with the epoch's logging."""
    import keras

    class EpochBackup(keras.callbacks.BackupAndRestore):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            pass  # saved by EpochMetrics instead

        def save(self, epoch: int, logs: dict | None = None) -> None:
            super().on_epoch_end(epoch, logs)

    return EpochBackup(str(directory))


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
) -> dict:
    """Train the configured model on the prepared training set and log an MLflow run.

    With `train.distribute=mirrored` one model is trained by a replica per device, each step
    on `batch_size` images per replica (see `_strategy`); otherwise on one device.

    Args:
        cfg: A composed config (validated here).
        paths: Where data is read and the run's files written (default: the project in cwd).
        entry_point: Recorded as a tag: `dvc`, `cli` or `api`.
        tags: More run tags, such as `mlflow.parentRunId` for a sweep's job.

    Returns:
        `run_id`, `model` (path of the saved model) and `history` (per-epoch metrics); and
        `unlogged`, why, when the store failed after training began (`unlogged_error`).

    Raises:
        TrackingError: the store cannot be used (checked before any work).
    """
    cfg = validate(cfg)
    paths = (paths or Paths.project()).of(cfg.data.name)
    # The store first: one that cannot record fails here, in seconds, before any work.
    tracking.experiment_id(paths.root, cfg.tracking.experiment)
    train_split, test_split = load_prepared(paths, "train"), load_prepared(paths, "test")
    meta = read_meta(paths)
    image = image_shape(paths, meta)
    # Reading the data and hashing it for the run's tags need no interpreter lock, so they
    # run on another core while TensorFlow and Keras are imported (on one).
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_aligned, *train_split, *test_split)
        tagging = pool.submit(tracking.run_tags, paths.root, paths.prepared, entry_point)
        # Before the first tensor: logical CPU devices can only be made before TF starts.
        scope, replicas = _strategy(cfg)

        import keras
        import tensorflow as tf

        from pipeline.models.scoring import as_tensors, probabilities

        x_train, y_train, x_test, y_test = as_tensors(reading.result())
    x_fit, y_fit, x_val, y_val = split_validation(
        x_train, y_train, cfg.val_split, cfg.data.fit_samples
    )
    # The labels fitted on: with `data.label_noise`, a fraction of them changed (see
    # pipeline.data.noise); validation and test labels are never changed.
    y_clean = None
    if cfg.data.label_noise:
        y_clean = np.asarray(y_fit)
        y_fit = tf.constant(relabel(y_clean, cfg.data.label_noise, cfg.seed)[0])

    # Whatever an earlier model of this process left in Keras' global state (a sweep's jobs
    # share a process) is let go, then garbage-collected, so that a sweep's memory stays flat
    # however many jobs it runs; the first training has nothing to free (a collection costs
    # about 0.2 s with TensorFlow loaded).
    global _trainings
    keras.backend.clear_session(free_memory=_trainings > 0)
    _trainings += 1
    keras.utils.set_random_seed(cfg.seed)  # Python, numpy and TensorFlow in one call
    # batch_size is per replica, so that each device's share of a step stays the size
    # configured: a step takes batch_size x replicas images, split between the replicas, and
    # applies their averaged gradient with the optimizer's learning rate as configured.
    batch_size = cfg.batch_size * replicas
    steps = math.ceil(len(x_fit) / batch_size)
    # Many batches per call into TensorFlow (train.steps_per_execution): the same steps in
    # the same order (the same weights, bit for bit) without a return to Python after each
    # one, which made the seed's loop about 1.6x slower here; few enough that Ctrl-C is still
    # seen promptly. Under a distribution strategy Keras' multi-step loop fails ("You must
    # feed a value for placeholder tensor", keras issue 19246): one step per call there.
    per_call = 1
    if cfg.train.distribute is Distribute.none:
        per_call = min(steps, cfg.train.steps_per_execution)
    with scope:  # the model's variables (and its optimizer's) live on every replica
        model = build_from_config(
            cfg, image, y_train.shape[1], total_steps=cfg.epochs * steps,
            steps_per_execution=per_call,
        )  # fmt: skip
    heldout = heldout_set(cfg)
    scored = min(TRAIN_SCORED, len(x_fit))
    subset = (
        x_fit[:scored],
        np.asarray(y_fit[:scored]),
        None if y_clean is None else y_clean[:scored],
    )
    per_epoch = _epoch_callback(subset, (x_test, np.asarray(y_test)), heldout)
    callbacks = [per_epoch]
    if cfg.early_stopping.patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=cfg.early_stopping.patience,
                restore_best_weights=True,
                verbose=1,
            )
        )
    # Progress of this configuration, kept until the run completes, for `train.resume=true`.
    progress, lock = _claim_progress(paths.root / RESUME_DIR, _digest(cfg))
    resumed = _interrupted_run(progress) if cfg.train.resume and progress else None
    if progress is not None:
        if resumed is None:
            shutil.rmtree(progress, ignore_errors=True)  # start afresh
        # First, so that a resume restores the weights and the epoch before anything else.
        per_epoch.backup = _epoch_backup(progress / "state")
        callbacks.insert(0, per_epoch.backup)
    # Where the run's files are (model, predictions, reports): its job directory.
    tags = {
        **tagging.result(),
        "job_dir": str(paths.out),
        # The set `best_epoch` and the per-epoch gaps are measured on.
        "heldout": {"val": "validation", "test": "test"}[heldout],
        **(tags or {}),
    }
    kept = False  # True once the job's files hold the whole run (see below)
    try:
        with tracking.active_run(
            paths.root, cfg.tracking.experiment, run_id=resumed, run_name=tracking.run_name(cfg),
            tags=tags,
        ) as run:  # fmt: skip
            if progress is not None:
                write_json(progress / "run.json", {"run_id": run.info.run_id})
            tracking.log_params(tracking.flat_params(cfg))
            n_fit, n_train = len(x_fit), len(x_train)
            x_shape, y_shape = train_split[0].shape[1:], train_split[1].shape[1:]
            splits = [
                (f"{cfg.data.name}-train", "training", split_digest(meta, "train", 0, n_fit),
                 (n_fit, *x_shape), (n_fit, *y_shape)),
                (f"{cfg.data.name}-test", "test", split_digest(meta, "test", 0, len(x_test)),
                 test_split[0].shape, test_split[1].shape),
            ]  # fmt: skip
            if n_val := len(x_val):  # the last rows of the training set
                digest = split_digest(meta, "train", n_train - n_val, n_train)
                splits.insert(1, (f"{cfg.data.name}-validation", "validation", digest,
                                  (n_val, *x_shape), (n_val, *y_shape)))  # fmt: skip
            # Where the data came from, as the download recorded it: a label in MLflow only (it
            # shapes nothing DVC tracks, so it is not part of the prepared data's record).
            manifest = read_manifest(paths.raw)
            source = manifest["source"] if manifest else str(paths.prepared)
            tracking.log_datasets(source, splits)
            if cfg.train.distribute is Distribute.mirrored:
                tracking.log_params(
                    {"distribute.replicas": replicas, "distribute.global_batch_size": batch_size}
                )
                # Where the replicas ran: the devices holding a copy of the model's weights.
                devices = [v.device for v in model.trainable_weights[0].value.values]
                tracking.set_tags({"distribute.devices": ",".join(devices)})
            start = time.perf_counter()
            fitted = model.fit(
                x_fit,
                y_fit,
                validation_data=(x_val, y_val) if len(x_val) else None,
                epochs=cfg.epochs,
                batch_size=batch_size,
                callbacks=callbacks,
                verbose=1 if sys.stdout.isatty() else 2,
            )
            seconds = time.perf_counter() - start
            if resumed:
                # The run's own record holds every epoch, those before the interruption too.
                history = tracking.epoch_history(run.info.run_id)
            else:
                history = {
                    history_name(k): [float(v) for v in values]
                    for k, values in sorted(
                        fitted.history.items(), key=lambda i: history_name(i[0])
                    )
                }

            # First the job's files, whole: what the run logs next comes from them, and if
            # the store fails they are the run (`python -m pipeline.tracking log <job dir>`).
            with atomic_path(paths.model) as tmp:
                model.save(tmp)
            # The saved model's class probabilities on what it was fitted on, the validation
            # rows and the test set, with what identifies them: evaluate reports on these.
            model_sha256 = file_sha256(paths.model)
            scoring = time.perf_counter()
            scores = {"train": (probabilities(model, x_fit), splits[0][2]),
                      "test": (probabilities(model, x_test), splits[-1][2])}  # fmt: skip
            if n_val:  # the final model (early stopping's restored weights) on validation
                scores["val"] = (probabilities(model, x_val), splits[1][2])
            scoring = time.perf_counter() - scoring
            predictions.save(
                paths.predictions, run.info.run_id, model_sha256, scores,
                label_noise=(cfg.data.label_noise, cfg.seed),
            )  # fmt: skip
            _write_history(history, paths.history)
            plots.learning_curves(history, paths.learning_curves, tracking.run_name(cfg))
            lines: list[str] = []
            model.summary(print_fn=lambda line, **_: lines.append(line))
            record = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "model_sha256": model_sha256,
                # What logging the job later needs (tracking.log_job): where, and what.
                "tracking_uri": tracking.active_uri(),
                "experiment": cfg.tracking.experiment,
                "tags": tags,
                "params": tracking.flat_params(cfg),
                "datasets": {"source": source, "splits": splits},
                # How fast this machine trained (per-epoch test scoring included), to compare
                # runs across machines and settings; benchmarks/bench.py reads them too.
                "metrics": {
                    "fit_seconds": seconds,
                    "fit_samples_per_second": len(x_fit) * len(fitted.epoch) / seconds,
                    # Of `fit_seconds`, the per-epoch scoring of the training subset and the
                    # test set; and the final model's scoring of the fitted rows and the test set.
                    "epoch_scoring_seconds": per_epoch.seconds,
                    "scoring_seconds": scoring,
                    # The process's peak memory so far (a sweep's jobs share one process).
                    "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                    / 1024,
                    # Where overfitting began, on the held-out set the `heldout` tag names.
                    **overfitting(history, heldout),
                },
                # What the logged model needs (tracking.log_outputs): its input and output,
                # an input example (uint8 pixels), its requirements, what predict shows.
                "model": {
                    "pixels": int(np.prod(image)),
                    "classes": int(y_train.shape[1]),
                    "example": np.asarray(test_split[0][:5]).tolist(),
                    "requirements": [
                        f"tensorflow=={tf.__version__}",
                        f"keras=={keras.__version__}",
                        f"numpy=={np.__version__}",
                    ],
                    "dataset": cfg.data.name,
                    "class_names": list(cfg.data.classes),
                    "image_shape": list(image),
                },
                "config": OmegaConf.to_yaml(cfg),
                "model_summary": "\n".join(lines) + "\n",
            }
            write_json(paths.run_info, record)
            kept = True
            tracking.log_outputs(paths, record)
    except TrackingError as err:
        if not kept:
            raise
        # The run is whole in its files; the store only failed to record it.
        return {"run_id": run.info.run_id, "model": paths.model, "history": history,
                "unlogged": str(err)}  # fmt: skip
    finally:
        if progress is not None and kept:
            shutil.rmtree(progress, ignore_errors=True)
            lock.close()
    print(f"MLflow run {run.info.run_name} ({run.info.run_id}) in {tracking.active_uri()}")
    return {"run_id": run.info.run_id, "model": paths.model, "history": history}


def unlogged_error(reason: str, paths: Paths) -> UnloggedRunError:
    """The one line that ends a run whose store failed: why, and where its files are."""
    return UnloggedRunError(
        f"{reason}. The run's model, metrics and plots are in {paths.out}; once the store "
        f"answers, `python -m pipeline.tracking log {paths.out}` records them as a complete run"
    )


def _digest(cfg: DictConfig) -> str:
    """Names one configuration's progress: everything but `train.resume` itself."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain["train"].pop("resume")
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def _claim_progress(base: Path, digest: str) -> tuple[Path | None, IO | None]:
    """This configuration's progress directory, locked for this process.

    Two trainings of one configuration at once (two sweeps, say) must not share it: the
    second gets none, and keeps no progress to resume. The lock ends with the process.
    """
    base.mkdir(parents=True, exist_ok=True)
    lock = open(base / f"{digest}.lock", "w")  # noqa: SIM115  (held for the whole training)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        print("another training of this configuration is running: this one cannot be resumed")
        return None, None
    return base / digest, lock


def _interrupted_run(progress: Path) -> str | None:
    """The MLflow run of an interrupted training of this configuration, if one left progress."""
    if (progress / "run.json").is_file() and (progress / "state").is_dir():
        run_id = json.loads((progress / "run.json").read_text())["run_id"]
        # Keras' backup of the last completed epoch: its weights and its epoch number. An
        # interruption while they were written leaves them unreadable.
        metadata = progress / "state" / "training_metadata.json"
        try:
            json.loads(metadata.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            if (progress / "state" / "latest.weights.h5").is_file() or metadata.exists():
                print(f"train.resume: the saved progress of MLflow run {run_id} was cut off "
                      "while it was written; starting afresh")  # fmt: skip
                return None
        print(f"resuming MLflow run {run_id} from its last completed epoch")
        return run_id
    print("train.resume: no interrupted run of this configuration; starting afresh")
    return None


def _write_history(history: dict[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV, the format `dvc plots` draws."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        for i, row in enumerate(zip(*history.values(), strict=True)):
            writer.writerow([i + 1, *(f"{v:.6f}" for v in row)])


def main() -> None:
    """Train the model params.yaml configures (the DVC train stage)."""

    def stage(cfg: DictConfig) -> None:
        result = fit(cfg, Paths.project(), "dvc")
        if "unlogged" in result:
            raise unlogged_error(result["unlogged"], Paths.project())

    run_stage(stage, main.__doc__)


if __name__ == "__main__":
    main()
