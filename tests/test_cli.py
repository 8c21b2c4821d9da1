"""`python -m pipeline.train` as a user runs it: Hydra composition, data prepared on demand,
one complete MLflow run per job."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import OFFLINE, assert_run_holds, python

SMALL = [*OFFLINE, "epochs=1", "data.train_samples=3000", "data.test_samples=1000"]


def run_cli(cwd: Path, *args: str, mirror: str | None = None) -> subprocess.CompletedProcess:
    return python(
        cwd, "-m", "pipeline.train", *args, env={"MNIST_MIRROR": mirror} if mirror else None
    )


def runs_tagged(**tags: str) -> list:
    import mlflow

    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    return mlflow.MlflowClient().search_runs(
        [mlflow.get_experiment_by_name("mnist").experiment_id], filter_string=query
    )


def test_single_run_fetches_data_trains_evaluates_and_logs(
    tmp_path: Path, http_mirror: str
) -> None:
    run_cli(tmp_path, *SMALL, "activation=elu", "seed=7", mirror=http_mirror)

    # Data was downloaded over HTTP and prepared in the project; the run's files went to
    # Hydra's job directory, not to the DVC outputs.
    assert len(list((tmp_path / "data" / "raw" / "mnist").glob("*.gz"))) == 4
    assert (tmp_path / "data" / "prepared" / "mnist" / "x_train.npy").is_file()
    assert not (tmp_path / "models").exists()
    (job_dir,) = (tmp_path / "outputs").glob("*/*")
    metrics = json.loads((job_dir / "reports" / "metrics.json").read_text())
    assert (job_dir / "models" / "model.keras").is_file()
    assert (job_dir / ".hydra" / "config.yaml").is_file()

    run_id = json.loads((job_dir / "models" / "run.json").read_text())["run_id"]
    (run,) = [r for r in runs_tagged(entry_point="cli") if r.info.run_id == run_id]
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mlp-elu-rmsprop-e1-b128"
    assert run.data.params["activation"] == "elu" and run.data.params["seed"] == "7"
    assert 0.5 < metrics["test_accuracy"] < 1  # 24 steps of training; chance is 0.1
    assert_run_holds(run, metrics)


@pytest.mark.slow
def test_sweep_logs_one_run_per_job(make_project, tmp_path: Path) -> None:
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    before = {r.info.run_id for r in runs_tagged(entry_point="cli")}
    run_cli(paths.root, "-m", *SMALL, "activation=relu,tanh", "model.hidden_units=[64]")
    new = [r for r in runs_tagged(entry_point="cli") if r.info.run_id not in before]
    assert sorted(r.data.params["activation"] for r in new) == ["relu", "tanh"]
    assert all(r.info.status == "FINISHED" for r in new)
    assert all("test_accuracy" in r.data.metrics for r in new)
    jobs = sorted((paths.root / "multirun").glob("*/*/[0-9]*"))
    assert [j.name for j in jobs] == ["0", "1"]
    assert all((j / "reports" / "metrics.json").is_file() for j in jobs)


@pytest.mark.slow
def test_a_glob_sweep_runs_every_optimizer_choice(make_project) -> None:
    """`optimizer=glob(*)` is Hydra's to expand: the pre-check lets it through, and the
    sweep's jobs are the YAML choices (no config schemas among them)."""
    paths, _ = make_project("data.train_samples=1000", "data.test_samples=500")
    small = [
        *OFFLINE,
        "epochs=1",
        "data.train_samples=1000",
        "data.test_samples=500",
        "model.hidden_units=[16]",
        "hydra.sweep.dir=multirun/glob",
    ]
    result = run_cli(paths.root, "-m", "optimizer=glob(*)", *small)
    assert "Traceback" not in result.stderr
    jobs = sorted((paths.root / "multirun" / "glob").glob("[0-9]*/.hydra/overrides.yaml"))
    chosen = sorted(
        line for job in jobs for line in job.read_text().splitlines() if "optimizer=" in line
    )
    assert chosen == ["- optimizer=adam", "- optimizer=rmsprop", "- optimizer=sgd"]
