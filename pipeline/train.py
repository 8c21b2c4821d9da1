"""Stage 3, train: fit the configured model, save it, and record the run in MLflow.

Two ways in:
- `python -m pipeline.train [overrides]` composes `conf/` with Hydra (`-m` sweeps), prepares
  the data if needed, trains, evaluates, and writes the run's files to Hydra's job directory.
- `python -m pipeline.train --params params.yaml` is the DVC stage: it only trains, on the
  config DVC wrote, into models/ and reports/; the evaluate stage completes the same run.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from pipeline import plots, tracking
from pipeline.config import (
    CONF_DIR,
    ConfigError,
    Distribute,
    PipelineError,
    check_overrides,
    validate,
)
from pipeline.io import atomic_path, write_json
from pipeline.paths import Paths
from pipeline.preprocess import as_tensors, load_prepared, read_aligned, split_validation

# Training batches run per call into TensorFlow (Keras' steps_per_execution).
STEPS_PER_CALL = 64
# Where unfinished trainings keep their progress (weights, optimizer state, epoch, run id).
RESUME_DIR = ".resume"


class DivergedError(PipelineError):
    """Training diverged: the loss is no longer a number."""


def _epoch_callback(x_test: np.ndarray, y_test: np.ndarray) -> Any:
    import keras
    import mlflow

    from pipeline.evaluate import score

    class EpochMetrics(keras.callbacks.Callback):
        """Scores the test set after each epoch and logs every epoch metric to MLflow.

        Keras names the epoch's metrics `loss`, `accuracy` and, with a validation split,
        `val_loss`, `val_accuracy`; this adds `test_loss`, `test_accuracy` to the same logs
        (and so to the History) and logs them all as `epoch/train_loss`, `epoch/val_loss`,
        `epoch/test_loss`, ... with step = epoch (from 1): train versus held-out per epoch,
        where overfitting shows.
        """

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs if logs is not None else {}
            if not math.isfinite(logs.get("loss", 0.0)):
                # Nothing more can be learnt; stop, and fail the run with the reason.
                raise DivergedError(f"loss became NaN at epoch {epoch + 1}")
            # Scored as evaluate scores, batch by batch: Keras' own `evaluate` spent more
            # time building its dataset and prediction function each epoch than scoring.
            accuracy, loss, _ = score(self.model, x_test, y_test)
            logs.update({"test_loss": loss, "test_accuracy": accuracy})
            metrics = {f"epoch/{history_name(k)}": float(v) for k, v in logs.items()}
            # Asynchronous, so the store's latency never stalls training.
            mlflow.log_metrics(metrics, step=epoch + 1, synchronous=False)

    return EpochMetrics()


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


def history_name(keras_name: str) -> str:
    """Keras' epoch metric name with its split spelled out: `loss` -> `train_loss`."""
    return keras_name if keras_name.startswith(("val_", "test_")) else f"train_{keras_name}"


def train(
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
        `run_id`, `model` (path of the saved model) and `history` (per-epoch metrics).
    """
    cfg = validate(cfg)
    paths = paths or Paths.project()
    train_split, test_split = load_prepared(paths, "train"), load_prepared(paths, "test")
    # Reading the data and hashing it for the run's tags need no interpreter lock, so they
    # run on another core while TensorFlow and Keras are imported (on one).
    with ThreadPoolExecutor(1) as pool:
        reading = pool.submit(read_aligned, *train_split, *test_split)
        tagging = pool.submit(tracking.run_tags, paths.root, paths.prepared, entry_point)
        # Before the first tensor: logical CPU devices can only be made before TF starts.
        scope, replicas = _strategy(cfg)

        from pipeline.backend import keras

        x_train, y_train, x_test, y_test = as_tensors(reading.result())
    x_fit, y_fit, x_val, y_val = split_validation(x_train, y_train, cfg.val_split)

    import mlflow

    from pipeline.models import build_model

    keras.utils.set_random_seed(cfg.seed)  # Python, numpy and TensorFlow in one call
    # batch_size is per replica, so that each device's share of a step stays the size
    # configured: a step takes batch_size x replicas images, split between the replicas, and
    # applies their averaged gradient with the optimizer's learning rate as configured.
    batch_size = cfg.batch_size * replicas
    steps = math.ceil(len(x_fit) / batch_size)
    # Many batches per call into TensorFlow: the same steps in the same order (the same
    # weights, bit for bit) without a return to Python after each one, which made the
    # seed's loop about 1.6x slower here; few enough that Ctrl-C is still seen promptly.
    # Under a distribution strategy Keras' multi-step loop fails ("You must feed a value for
    # placeholder tensor", keras issue 19246), so mirrored training runs one step per call.
    per_call = min(steps, STEPS_PER_CALL) if cfg.train.distribute is Distribute.none else 1
    with scope:  # the model's variables (and its optimizer's) live on every replica
        model = build_model(cfg, total_steps=cfg.epochs * steps, steps_per_execution=per_call)
    callbacks = [_epoch_callback(x_test, y_test)]
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
        callbacks.append(keras.callbacks.BackupAndRestore(str(progress / "state")))
    tags = {**tagging.result(), **(tags or {})}
    with tracking.active_run(
        paths.root, run_id=resumed, run_name=tracking.run_name(cfg), tags=tags
    ) as run:
        if progress is not None:
            write_json(progress / "run.json", {"run_id": run.info.run_id})
        mlflow.log_params(tracking.flat_params(cfg))
        if cfg.train.distribute is Distribute.mirrored:
            mlflow.log_params(
                {"distribute.replicas": replicas, "distribute.global_batch_size": batch_size}
            )
            # Where the replicas ran: the devices holding a copy of the model's weights.
            devices = [v.device for v in model.trainable_weights[0].value.values]
            mlflow.set_tag("distribute.devices", ",".join(devices))
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
        # How fast this machine trained (per-epoch test scoring included), to compare runs
        # across machines and settings; benchmarks/bench.py reads them too.
        mlflow.log_metrics(
            {
                "fit_seconds": seconds,
                "fit_samples_per_second": len(x_fit) * len(fitted.epoch) / seconds,
            }
        )
        if resumed:
            # The run's own record holds every epoch, those before the interruption included.
            history = tracking.epoch_history(run.info.run_id)
        else:
            history = {
                history_name(k): [float(v) for v in values]
                for k, values in sorted(fitted.history.items(), key=lambda i: history_name(i[0]))
            }

        with atomic_path(paths.model) as tmp:
            model.save(tmp)
        _write_history(history, paths.history)
        plots.learning_curves(history, paths.learning_curves, tracking.run_name(cfg))
        write_json(paths.run_info, {"run_id": run.info.run_id, "run_name": run.info.run_name})
        mlflow.log_artifact(str(paths.learning_curves), "plots")
        mlflow.log_artifact(str(paths.history))
        mlflow.log_text(OmegaConf.to_yaml(cfg), "config.yaml")
        lines: list[str] = []
        model.summary(print_fn=lambda line, **_: lines.append(line))
        mlflow.log_text("\n".join(lines) + "\n", "model_summary.txt")
        _log_mlflow_model(model, np.asarray(x_test[:5]))
    if progress is not None:
        shutil.rmtree(progress, ignore_errors=True)
        lock.close()
    print(f"MLflow run {run.info.run_name} ({run.info.run_id}) in {mlflow.get_tracking_uri()}")
    return {"run_id": run.info.run_id, "model": paths.model, "history": history}


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
        print(f"resuming MLflow run {run_id} from its last completed epoch")
        return run_id
    print("train.resume: no interrupted run of this configuration; starting afresh")
    return None


def _log_mlflow_model(model: Any, example: np.ndarray) -> None:
    """Log the model in MLflow's format, with its signature and an input example, so that
    `mlflow models predict -m runs:/<run id>/model` can score it."""
    import keras
    import mlflow
    import tensorflow as tf
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    # What MLflow's infer_signature gives for the model's input and output arrays, without
    # compiling a prediction function to find out.
    signature = ModelSignature(
        Schema([TensorSpec(np.dtype(np.float32), (-1, *model.input_shape[1:]))]),
        Schema([TensorSpec(np.dtype(np.float32), (-1, *model.output_shape[1:]))]),
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        # mlflow.keras.log_model fails when given an input example (mlflow issue 16183):
        # saving into an existing directory, then logging it, gives the same artifacts.
        path.mkdir()
        mlflow.keras.save_model(
            model,
            str(path),
            signature=signature,
            input_example=np.asarray(example),
            pip_requirements=[f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}"],
        )
        mlflow.log_artifacts(str(path), "model")


def _write_history(history: dict[str, list[float]], path: Path) -> None:
    """Per-epoch metrics as CSV, the format `dvc plots` draws."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *history])
        for i, row in enumerate(zip(*history.values(), strict=True)):
            writer.writerow([i + 1, *(f"{v:.6f}" for v in row)])


def ensure_data(cfg: DictConfig, paths: Paths) -> None:
    """Download and preprocess when the prepared data is missing or was prepared differently."""
    from pipeline.download import download
    from pipeline.mnist import load_raw
    from pipeline.preprocess import is_prepared, preprocess

    if is_prepared(cfg, paths):
        return
    try:
        load_raw(paths.raw)
    except (FileNotFoundError, ValueError):
        download(cfg, paths)
    preprocess(cfg, paths)


def run_cli(cfg: DictConfig) -> dict:
    """One `python -m pipeline.train` job: data if needed, train, evaluate, one MLflow run.

    The run's files go to Hydra's job directory; a sweep's job is tagged as a child of the
    sweep's parent run (see pipeline/sweep.py).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline.evaluate import evaluate
    from pipeline.sweep import parent_run_id

    hydra = HydraConfig.get()
    cfg = validate(cfg)
    paths = Paths(root=Path.cwd().resolve(), out=Path(hydra.runtime.output_dir))
    tags = {}
    if hydra.mode == RunMode.MULTIRUN:
        tags["sweep_job"] = str(hydra.job.num)
        if parent := parent_run_id(Path(hydra.sweep.dir)):
            tags["mlflow.parentRunId"] = parent
    ensure_data(cfg, paths)
    train(cfg, paths, entry_point="cli", tags=tags)
    return evaluate(cfg, paths)


def main() -> None:
    """Train the configured model (see the module docstring for the two ways in)."""
    args = sys.argv[1:]
    if args[:1] == ["--params"]:
        from pipeline.cli import run_stage

        return run_stage(lambda cfg: train(cfg, Paths.project(), "dvc"), main.__doc__, args)

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline import sweep
    from pipeline.cli import fail, handle_signals, interrupted, is_write_error, write_failed

    # Hydra reports a bad override as a multi-line trace; check every job of the command line
    # first so that bad input gets one line and a non-zero exit before anything is written.
    try:
        check_overrides(args)
    except ConfigError as err:
        fail(err)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def job(cfg: DictConfig) -> float:
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        try:
            return run_cli(cfg)["test_accuracy"]
        except PipelineError as err:
            if not sweeping:
                fail(err)
            print(f"error: job {HydraConfig.get().job.num}: {err}", file=sys.stderr)
        except Exception as err:
            if not sweeping:
                if is_write_error(err):
                    write_failed(err)
                raise
            traceback.print_exc()
        # A sweep goes on with its other jobs. The failed job's run is marked FAILED, and so
        # is the sweep's parent run, which makes the command's exit status 1.
        return float("nan")

    handle_signals()
    try:
        job()
    except KeyboardInterrupt as err:
        sweep.close_interrupted()
        interrupted(err)
    if sweep.last_status == "FAILED":
        sys.exit(1)


if __name__ == "__main__":
    from pipeline.cli import run

    run(main)
