"""Sweeps on Hydra's other launchers: jobs in parallel processes on this machine (joblib,
submitit_local), and the shipped `conf/hydra/launcher/slurm.yaml` composed (its sweeps on a
real cluster: tests/test_slurm.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import OFFLINE, ROOT, own_store, python
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SMALL = [
    *OFFLINE,
    "data.train_samples=1000",
    "data.test_samples=500",
    "model.hidden_units=[64]",
    "epochs=1",
]
SWEEP = ["activation=relu,elu,tanh", "seed=0,1"]
COMBOS = {(a, s) for a in ("relu", "elu", "tanh") for s in ("0", "1")}
THREAD_VARS = ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "OMP_NUM_THREADS")
# Makes this module importable in the sweep's processes, for JobProbe.
PROBE_ENV = {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
PROBE = "+hydra.callbacks.probe._target_=test_launchers.JobProbe"


class JobProbe(Callback):
    """Records which process ran the sweep and each job, and the thread limits each job's
    process was started with (what TensorFlow reads when it starts)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        (sweep_dir / "sweep_pid").write_text(str(os.getpid()))

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        seen = {"pid": os.getpid(), **{v: os.environ.get(v) for v in THREAD_VARS}}
        (Path(config.hydra.runtime.output_dir) / "probe.json").write_text(json.dumps(seen))


def sweep_runs(uri: str) -> tuple[Any, list]:
    """The store's one parent run and the runs tagged as its children."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children)  # no run outside the sweep
    return parent, children


LAUNCHERS = {
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], 2),
    "submitit_local": (["hydra/launcher=submitit_local"], 6),  # every job at once
}


@pytest.mark.slow
@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_six_jobs_in_parallel_end_as_six_finished_runs_under_one_parent(
    make_project, tmp_path: Path, launcher: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _ = make_project("data.train_samples=1000", "data.test_samples=500")
    for name in THREAD_VARS:  # the suite's own share per worker: the sweep divides the cores
        monkeypatch.delenv(name, raising=False)
    uri = own_store(tmp_path)
    args, at_once = LAUNCHERS[launcher]
    python(
        paths.root,
        "-m",
        "pipeline.train",
        "-m",
        *args,
        PROBE,
        *SWEEP,
        *SMALL,
        env={"MLFLOW_TRACKING_URI": uri, **PROBE_ENV},
    )

    parent, children = sweep_runs(uri)
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs"] == "6 of 6 finished"
    assert len(children) == 6 and all(c.info.status == "FINISHED" for c in children)
    assert {(c.data.params["activation"], c.data.params["seed"]) for c in children} == COMBOS
    for child in children:
        m = child.data.metrics
        assert 0.3 < m["test_accuracy"] <= 1 and 0.3 < m["train_accuracy"] <= 1  # chance: 0.1
        assert m["generalization_gap"] == pytest.approx(m["train_accuracy"] - m["test_accuracy"])

    # Each job ran in a process of its own (not the sweep's), started with its share of the
    # cores: this machine's cores divided among the jobs running at once.
    # The sweep's directory, named once for all its jobs (in whichever process each ran), and
    # one directory per job, claimed by it.
    (sweep_dir,) = (paths.root / "multirun").glob("*/*")
    assert re.fullmatch(r"\d{2}-\d{2}-\d{2}-[0-9a-f]{8}", sweep_dir.name), sweep_dir
    assert len(list(sweep_dir.glob("[0-9]*/job.json"))) == 6
    probes = [json.loads(p.read_text()) for p in sweep_dir.glob("[0-9]*/probe.json")]
    assert len(probes) == 6
    pids = {p["pid"] for p in probes}
    assert int((sweep_dir / "sweep_pid").read_text()) not in pids
    cores = os.cpu_count() or 1
    parallel = min(at_once, cores)
    expected = str(cores // parallel) if parallel > 1 else None
    for probe in probes:
        assert probe["TF_NUM_INTRAOP_THREADS"] == probe["OMP_NUM_THREADS"] == expected
        assert probe["TF_NUM_INTEROP_THREADS"] == ("1" if parallel > 1 else None)
    if launcher == "joblib":
        assert len(pids) <= 2  # joblib's two worker processes, each running jobs in turn
    else:
        # A process per job, each submitted by submitit, which kept its logs and result.
        assert len(pids) == 6
        results = list(sweep_dir.glob(".submitit/*/*_result.pkl"))
        logs = [p.read_text() for p in sweep_dir.glob(".submitit/*/*_log.out")]
        assert len(results) == len(logs) == 6
        assert all("Job completed successfully" in log for log in logs)


def test_a_sweeps_end_names_each_job_that_did_not_finish(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from pipeline.sweep import _failures

    task = ["activation=relu,elu", "seed=0,1", "epochs=1"]
    for num, (activation, seed) in enumerate([("relu", 0), ("relu", 1), ("elu", 0), ("elu", 1)]):
        (tmp_path / str(num) / ".hydra").mkdir(parents=True)
        overrides = [f"activation={activation}", f"seed={seed}", "epochs=1"]
        (tmp_path / str(num) / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    def run(job: int, status: str, **tags: str) -> SimpleNamespace:
        tags = {"sweep_job": str(job), **tags}
        info = SimpleNamespace(run_id=f"r{job}", status=status)
        return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags))

    children = [
        run(0, "FINISHED"),
        run(1, "FAILED", error="DivergedError: loss became NaN"),
        run(3, "KILLED"),
    ]
    assert _failures(tmp_path, task, children) == [
        "job 1 (activation=relu seed=1): DivergedError: loss became NaN",
        f"job 2 (activation=elu seed=0): left no run (its output: {tmp_path / '2'})",
        "job 3 (activation=elu seed=1): run r3 KILLED",
    ]


JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT = "hydra_plugins.hydra_submitit_launcher.submitit_launcher."
BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


@pytest.mark.parametrize(
    ("launcher", "task", "batch", "threads"),
    [
        ({"_target_": JOBLIB, "n_jobs": 2}, ["a=1,2,3"], None, "4"),
        ({"_target_": JOBLIB, "n_jobs": -1}, ["a=1,2"], None, "4"),  # only 2 jobs to run
        ({"_target_": JOBLIB, "n_jobs": -3}, ["a=range(10)"], None, "1"),  # 6 workers
        ({"_target_": SUBMITIT + "LocalLauncher"}, ["a=1,2", "b=x,y"], None, "2"),  # all 4
        ({"_target_": SUBMITIT + "LocalLauncher"}, ["a=1,2", "b=x,y"], 2, "4"),  # 2 at a time
        ({"_target_": SUBMITIT + "SlurmLauncher"}, ["a=1,2"], None, None),  # other machines
        ({"_target_": BASIC}, ["a=1,2"], None, None),  # one job at a time
    ],
)
def test_jobs_running_at_once_here_share_the_cores(
    monkeypatch: pytest.MonkeyPatch, launcher: dict, task: list, batch: int | None, threads: str
) -> None:
    from omegaconf import OmegaConf

    from pipeline.sweep import _share_cores

    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    for name in THREAD_VARS:  # set first, so that the test's values are undone after it
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    _share_cores(
        OmegaConf.create(
            {
                "hydra": {
                    "launcher": launcher,
                    "overrides": {"task": task},
                    "sweeper": {"max_batch_size": batch},
                }
            }
        )
    )
    assert os.environ.get("TF_NUM_INTRAOP_THREADS") == os.environ.get("OMP_NUM_THREADS") == threads
    assert os.environ.get("TF_NUM_INTEROP_THREADS") == (threads and "1")


def test_shipped_slurm_config_composes_with_its_keys(tmp_path: Path) -> None:
    result = python(
        tmp_path,
        "-m",
        "pipeline.train",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.timeout_min=30",
        "--cfg",
        "hydra",
        "--package",
        "hydra.launcher",
    )
    launcher = yaml.safe_load(result.stdout.split("\n", 1)[1])  # after `# @package ...`
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 30
    assert (launcher["gpus_per_node"], launcher["cpus_per_task"], launcher["mem_gb"]) == (1, 4, 16)
    assert launcher["array_parallelism"] == 16
