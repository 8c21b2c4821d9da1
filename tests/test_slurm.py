"""Sweeps and searches on a real SLURM cluster (`hydra/launcher=slurm`), logged to a
`mlflow server` on PostgreSQL: jobs that finish, one cancelled with `scancel`, one stopped at
its time limit and resumed, and two searches sharing one Optuna study in PostgreSQL.

The cluster comes from `.ci/slurm-up` (`MNIST_PIPELINE_SLURM=1`, `SLURM_CONF`), PostgreSQL
from `MNIST_PIPELINE_POSTGRES_URL` (tests/test_tracking_server.py). Without them the tests are
skipped, unless `MNIST_PIPELINE_REQUIRE_SLURM=1` (or `CI`) is set: then they fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_tracking_server as pg
from conftest import OFFLINE, command_env

SLURM_VAR, REQUIRE_VAR = "MNIST_PIPELINE_SLURM", "MNIST_PIPELINE_REQUIRE_SLURM"
DATA = ["data.train_samples=2000", "data.test_samples=500"]
# One core and 2 GB per job: the 2-core node runs two jobs at a time.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
]
SMALL = [*OFFLINE, *DATA, "epochs=1"]

# The tests marked slow start SLURM jobs and a PostgreSQL-backed `mlflow server`: one
# database and one server for the whole module.
postgres_url, database, server = pg.postgres_url, pg.database, pg.server


@pytest.fixture(scope="module")
def cluster() -> None:
    """The one-node cluster of `.ci/slurm-up`: skipped without it, failed when required."""
    if os.environ.get(SLURM_VAR) != "1" or shutil.which("sbatch") is None:
        msg = 'no SLURM cluster: run `eval "$(.ci/slurm-up)"` (as root) to run the SLURM tests'
        if os.environ.get(REQUIRE_VAR) == "1" or os.environ.get("CI"):
            pytest.fail(f"{msg} ({REQUIRE_VAR} or CI is set: they must run)")
        pytest.skip(msg)


@pytest.fixture(scope="module")
def project(cluster: None, make_project) -> Path:
    """A project with real MNIST data, shared by the module's sweeps."""
    paths, _ = make_project(*DATA)
    return paths.root


def start(root: Path, url: str, *args: str) -> subprocess.Popen:
    """`python -m pipeline.train -m <args>` in `root`, logging to the server at `url`."""
    env = command_env(url)
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "-m", *args],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def sweep(stderr: str, url: str) -> tuple:
    """The sweep's parent run (named on stderr) and its child runs."""
    import mlflow

    (parent_id,) = set(re.findall(r"MLflow sweep run (\w+)", stderr))
    client = mlflow.MlflowClient(tracking_uri=url)
    parent = client.get_run(parent_id)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    return parent, children


def sacct(*job_ids: str) -> dict[str, str]:
    """The state SLURM's accounting holds for each job (array tasks as `<array>_<task>`),
    once each has ended: a job's result is written a moment before its process ends."""
    command = ["sacct", "--noheader", "--parsable2", "--allocations", "--format=JobID,State"]
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(
            [*command, *(f"--jobs={j}" for j in job_ids)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        states = dict(line.split("|") for line in out.splitlines())
        running = {"PENDING", "RUNNING", "COMPLETING"} & set(states.values())
        if not running or time.monotonic() > deadline:
            return states
        time.sleep(1)


def submitit_jobs(root: Path, parent: object) -> list[Path]:
    """The submitit folders of the sweep's jobs (`<sweep dir>/.submitit/<array>_<task>/`)."""
    sweep_dir = root / parent.data.tags["sweep_dir"]
    return sorted((sweep_dir / ".submitit").glob("[0-9]*_[0-9]*"))


@pytest.mark.slow
def test_a_sweep_runs_as_slurm_jobs_under_one_parent(project: Path, server: dict) -> None:
    proc = start(project, server["url"], *SLURM, "activation=relu,elu,tanh", *SMALL)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Bypassing sacct error" not in stderr  # submitit reads the jobs' states

    parent, children = sweep(stderr, server["url"])
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs"] == "3 of 3 finished"
    assert sorted(c.data.params["activation"] for c in children) == ["elu", "relu", "tanh"]
    for child in children:
        assert child.info.status == "FINISHED"
        assert 0.5 < child.data.metrics["test_accuracy"] <= 1  # chance: 0.1
    # Three tasks of one SLURM job array, each run by slurmd on the node, as accounting
    # recorded them; the array asked for what the launcher's keys say.
    jobs = submitit_jobs(project, parent)
    assert len(jobs) == 3 and len({j.name.split("_")[0] for j in jobs}) == 1
    assert set(sacct(*(j.name for j in jobs)).values()) == {"COMPLETED"}
    for job in jobs:
        assert f"JobEnvironment(job_id={job.name}," in (job / f"{job.name}_0_log.out").read_text()
    (script,) = jobs[0].parent.glob("*/*_submission.sh")
    directives = set(re.findall(r"#SBATCH (\S+)", script.read_text()))
    assert {"--cpus-per-task=1", "--mem=2GB", "--time=60", "--array=0-2%3"} <= directives


@pytest.mark.slow
def test_a_refused_submission_fails_the_sweep_in_its_parent_run(
    project: Path, server: dict
) -> None:
    # The cluster has no partition `gpu`: sbatch refuses the array, no job runs.
    proc = start(project, server["url"], *SLURM, "hydra.launcher.partition=gpu", *SMALL)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "invalid partition specified: gpu" in stderr
    parent, children = sweep(stderr, server["url"])
    assert parent.info.status == "FAILED" and children == []
    assert parent.data.tags["error"] == "sweep aborted before all its jobs returned"


def wait_for_epochs(client: object, seed: str, epochs: int) -> str:
    """The run id of the running job `seed=<seed>` once it has logged `epochs` epochs."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        experiment = client.get_experiment_by_name("mnist")  # made by the first run
        runs = experiment and client.search_runs(
            [experiment.experiment_id], f"params.seed = '{seed}' and attributes.status = 'RUNNING'"
        )
        history = runs and client.get_metric_history(runs[0].info.run_id, "epoch/train_loss")
        if history and len(history) >= epochs:
            return runs[0].info.run_id
        time.sleep(1)
    raise AssertionError(f"no job seed={seed} logged {epochs} epochs in 180 s")


def running_array() -> str:
    """The one SLURM job array in the queue (the sweep under test)."""
    out = subprocess.run(["squeue", "--noheader", "--format=%i"], capture_output=True, text=True)
    (array,) = {job.split("_")[0] for job in out.stdout.split()}
    return array


@pytest.mark.slow
def test_scancel_and_the_time_limit_end_runs_killed_saying_why_and_resume_continues(
    project: Path, server: dict
) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=server["url"])
    # Neither job ends by itself: seed=10 is cancelled after its first epoch; seed=11 gets
    # SLURM's warning (SIGUSR2) before its time limit of 1 minute, SLURM's smallest. SLURM
    # checks limits every 30 s and warns up to 30 s early: asked for 1 s before the limit,
    # the warning comes 30 to 60 s after the start, after some epochs.
    long = [*OFFLINE, *DATA, "model.hidden_units=[1024,1024]", "epochs=500"]
    limit = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=1"]
    proc = start(project, server["url"], *SLURM, *limit, "seed=10,11", *long)
    try:
        wait_for_epochs(client, "10", 1)
        array = running_array()
        subprocess.run(["scancel", f"{array}_0"], check=True)
        _, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr[-3000:]

    parent, children = sweep(stderr, server["url"])
    assert parent.info.status == "FAILED" and parent.data.tags["jobs"] == "0 of 2 finished"
    runs = {c.data.params["seed"]: c for c in children}
    assert runs["10"].info.status == runs["11"].info.status == "KILLED"
    cancelled, timed_out = runs["10"].data.tags["error"], runs["11"].data.tags["error"]
    after = r"after \d:\d\d of its 1:00"
    assert re.fullmatch(
        rf"Terminated: SLURM job {array}_0 was cancelled \(scancel\): SIGTERM {after}", cancelled
    )
    assert re.fullmatch(
        rf"Terminated: SLURM job {array}_1 reached its time limit: SIGUSR2 {after}", timed_out
    )
    # The sweep's last lines say which job ended how; SLURM's accounting agrees.
    assert f"job 0 (seed=10): {cancelled}" in stderr and f"job 1 (seed=11): {timed_out}" in stderr
    states = sacct(f"{array}_0", f"{array}_1")
    assert states[f"{array}_0"].startswith("CANCELLED") and states[f"{array}_1"] == "COMPLETED"

    # Run again with train.resume=true, it continues the same run after its last epoch.
    run_id = runs["11"].info.run_id
    done = len(client.get_metric_history(run_id, "epoch/train_loss"))
    assert 1 <= done < 500
    env = command_env(server["url"])
    resumed = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "seed=11", *long, "train.resume=true"],
        cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(client.get_metric_history(run_id, "epoch/train_loss")) < done + 2:
            assert resumed.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        resumed.terminate()
        stdout, _ = resumed.communicate(timeout=60)
    finally:
        resumed.kill()
    assert f"resuming MLflow run {run_id}" in stdout
    assert "Epoch 1/500" not in stdout and f"Epoch {done + 1}/500" in stdout
    steps = [m.step for m in client.get_metric_history(run_id, "epoch/train_loss")]
    assert sorted(steps) == list(range(1, len(steps) + 1))  # no epoch trained twice


@pytest.fixture(scope="module")
def study_storage(postgres_url: str) -> Iterator[tuple[str, str]]:
    """Optuna's storage in a PostgreSQL database of its own (MLflow's database has a table
    `alembic_version` too), through the project's psycopg 3 driver: its URL without the
    password (the runs record the URL), and the password, for PGPASSWORD."""
    name = f"mnist_pipeline_optuna_{uuid.uuid4().hex[:12]}"
    pg.sql(postgres_url, f'CREATE DATABASE "{name}"')
    try:
        url = urllib.parse.urlsplit(pg.with_database(postgres_url, name))
        netloc = url.netloc.replace(f":{url.password}@", "@")
        yield url._replace(scheme="postgresql+psycopg", netloc=netloc).geturl(), url.password
    finally:
        pg.sql(postgres_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_two_searches_on_slurm_share_one_study_in_postgresql(
    project: Path, server: dict, study_storage: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    import optuna

    storage, password = study_storage
    monkeypatch.setenv("PGPASSWORD", password)  # read by libpq, here and in the SLURM jobs
    args = [
        "+search=mlp", *SLURM, f"search.storage='{storage}'", "search.study=slurm",
        "search.trials=2", "search.final_seeds=0", *SMALL, "optimizer=adam",
        "model.hidden_units=choice([16],[32])", "activation=choice(relu,elu)",
    ]  # fmt: skip
    procs = [start(project, server["url"], *args) for _ in range(2)]
    stderrs = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr[-3000:]
        stderrs.append(stderr)

    study = optuna.load_study(study_name="slurm", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    client = mlflow.MlflowClient(tracking_uri=server["url"])
    trials = []
    for stderr in stderrs:
        parent, children = sweep(stderr, server["url"])
        assert parent.info.status == "FINISHED" and len(children) == 2
        trials += [c.data.tags["search.trial"] for c in children]
        jobs = submitit_jobs(project, parent)
        assert set(sacct(*(j.name for j in jobs)).values()) == {"COMPLETED"} and len(jobs) == 2
    assert sorted(trials) == ["0", "1", "2", "3"]  # one run per trial, none twice
    runs = client.search_runs(
        [client.get_experiment_by_name("mnist").experiment_id], "tags.`search.study` = 'slurm'"
    )
    assert len(runs) == 4 + 2  # the trials and the two searches' parents
    assert password not in json.dumps([[r.data.tags, r.data.params] for r in runs])


# How a SLURM job's run says why it was stopped (pipeline.slurm), without a cluster.
@pytest.mark.parametrize(
    ("signum", "elapsed", "limit", "expected"),
    [
        ("SIGTERM", "0:12", "1:00", "was cancelled (scancel): SIGTERM after 0:12 of its 1:00"),
        ("SIGTERM", "1:15", "1:00", "reached its time limit: SIGTERM after 1:15 of its 1:00"),
        # SIGUSR2 comes `signal_delay_s` (here 120) before the limit, up to a minute early.
        (
            "SIGUSR2",
            "57:30",
            "1:00:00",
            "reached its time limit: SIGUSR2 after 57:30 of its 1:00:00",
        ),
        ("SIGUSR2", "10:00", "1:00:00", "was preempted: SIGUSR2 after 10:00 of its 1:00:00"),
        ("SIGTERM", None, None, "stopped by SIGTERM (scancel, its time limit or a preemption)"),
    ],
)
def test_a_slurm_job_says_why_it_was_stopped(
    monkeypatch: pytest.MonkeyPatch, signum: str, elapsed: str, limit: str, expected: str
) -> None:
    import signal

    from pipeline import slurm
    from pipeline.cli import Terminated

    times = (slurm.seconds(elapsed or ""), slurm.seconds(limit or ""))
    monkeypatch.setattr(slurm, "job_times", lambda job: times)
    monkeypatch.setenv("SLURM_JOB_ID", "8")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "7")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR2)}
    try:
        assert slurm.stop_on_signals(120)
        with pytest.raises(Terminated) as raised:
            signal.raise_signal(signal.Signals[signum])
        # A second signal while the run is being closed is ignored.
        assert (
            signal.getsignal(signal.SIGTERM) is signal.getsignal(signal.SIGUSR2) is (signal.SIG_IGN)
        )
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
    assert str(raised.value) == f"SLURM job 7_0 {expected}"


def test_outside_slurm_no_handler_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal

    from pipeline import slurm

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    before = signal.getsignal(signal.SIGUSR2)
    assert not slurm.stop_on_signals(120) and signal.getsignal(signal.SIGUSR2) is before
    assert [slurm.seconds(t) for t in ("2-01:00:00", "1:02:03", "UNLIMITED")] == [
        176400,
        3723,
        None,
    ]
