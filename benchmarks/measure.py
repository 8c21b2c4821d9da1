"""Measuring for bench.py: processes run to their end, the runs they logged, the machine."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The seed's network and data, for its FLOP count.
LAYERS = [(784, 512), (512, 10)]
BATCH = 128


@dataclass
class Process:
    """One measured process: wall seconds from start to exit, peak resident memory, output."""

    seconds: float
    peak_bytes: int
    output: str


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> Process:
    """Run `cmd` to its end; its own peak RSS comes from the kernel (wait4), not sampling."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    end = time.perf_counter()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"error: `{' '.join(cmd)}` exited {proc.returncode}:\n{output[-3000:]}")
    return Process(end - start, usage.ru_maxrss * 1024, output)  # KiB -> bytes


def matmul_rate(seconds: float = 2.0) -> float:
    """FLOP/s of NumPy's float32 matrix product at the seed's shapes (forward: batch x 784
    times 784 x 512; weight gradient: 784 x batch times batch x 512), on all cores."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 784), dtype=np.float32)
    w = rng.random((784, 512), dtype=np.float32)
    g = rng.random((BATCH, 512), dtype=np.float32)
    for _ in range(20):  # warm up the BLAS threads
        x @ w
    flops, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(20):
            x @ w
            x.T @ g
        flops += 20 * 2 * (2 * BATCH * 784 * 512)
    return flops / elapsed


def training_flops(samples: int, epochs: int) -> int:
    """FLOPs of training the seed's network: per sample, each Dense layer's forward product
    and weight gradient (2 * in * out each), and the input gradient of every layer but the
    first (the pixels need none). Bias, activation and optimizer work is left out: small."""
    per_sample = sum(4 * i * o for i, o in LAYERS) + sum(2 * i * o for i, o in LAYERS[1:])
    return per_sample * samples * epochs


def run_metrics(uri: str, run_json: Path) -> dict[str, float]:
    """The metrics of the MLflow run whose id a stage wrote to `run_json`."""
    import mlflow

    from pipeline.record import RunRecord

    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(RunRecord.load(run_json).run_id)
    metrics = dict(run.data.metrics)
    if "test_accuracy" not in metrics:  # the train stage alone: its last epoch's score
        metrics["test_accuracy"] = metrics["epoch/test_accuracy"]
    return metrics


def sweep_fits(uri: str, sweep_dir: Path) -> list[float]:
    """fit_seconds of each child run of the sweep whose parent id is in `sweep_dir`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = json.loads((sweep_dir / "mlflow_parent.json").read_text())["run_id"]
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    return [c.data.metrics["fit_seconds"] for c in children]


def sweep_peaks(uri: str, sweep_dir: Path) -> list[float]:
    """Each job's `process_peak_rss_mb` (the sweep process's peak memory when the job's
    training ended), in job order, for the sweep whose parent id is in `sweep_dir`."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    parent = json.loads((sweep_dir / "mlflow_parent.json").read_text())["run_id"]
    experiment = client.get_run(parent).info.experiment_id
    children = client.search_runs(
        [experiment], filter_string=f"tags.mlflow.parentRunId = '{parent}'", max_results=1000
    )
    jobs = sorted(children, key=lambda c: int(c.data.tags["sweep_job"]))
    return [c.data.metrics["process_peak_rss_mb"] for c in jobs]


def job_overheads(
    sweep_dir: Path, beyond: tuple[str, ...] = ("fit_seconds", "scoring_seconds")
) -> list[float]:
    """What each job of a sweep (or a search's trial) cost beyond its `beyond` (by default
    its `fit` and its final scoring), in seconds: the time from its start to the next job's
    start (each job records when it started, in job.json), less those seconds of its
    models/run.json. The last job has no next one to time it by."""
    from pipeline.record import RunRecord

    jobs = sorted(sweep_dir.glob("[0-9]*/job.json"), key=lambda p: int(p.parent.name))
    started = [json.loads(p.read_text())["started"] for p in jobs]
    costs = []
    for job, start, following in zip(jobs, started, started[1:], strict=False):
        metrics = RunRecord.load(job.parent / "models" / "run.json").metrics
        costs.append(following - start - sum(metrics[k] for k in beyond))
    return costs


def machine() -> dict[str, str]:
    import hydra
    import keras
    import mlflow
    import numpy
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    from importlib.metadata import version

    dvc = version("dvc")
    # Where TensorFlow trains here (each run's `devices` tag says the same for its own run).
    gpus = [d.name.removeprefix("/device:") for d in tf.config.list_logical_devices("GPU")]
    return {
        "machine": f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()}",
        "device": ",".join(gpus) or "CPU:0 (TensorFlow sees no GPU)",
        "versions": (
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}, NumPy {numpy.__version__}, MLflow {mlflow.__version__}, "
            f"DVC {dvc}, Hydra {hydra.__version__}"
        ),
    }
