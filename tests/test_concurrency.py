"""Runs started together keep their own results: a directory per run, claimed by it, and an
evaluation that checks it reports on its own run's model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import OFFLINE, command_env, download_model, own_store

from pipeline.errors import PipelineError
from pipeline.train import CLAIM, claim

SMALL = [
    *OFFLINE,
    "data.train_samples=2000",
    "data.test_samples=1000",
    "model.hidden_units=[32]",
    "epochs=2",
]
ACTIVATIONS = ("relu", "elu", "tanh", "sigmoid")


def test_a_run_directory_is_claimed_once(tmp_path: Path) -> None:
    out = tmp_path / "outputs" / "run"
    claim(out)
    record = json.loads((out / CLAIM).read_text())
    assert record["pid"] == os.getpid()
    with pytest.raises(PipelineError, match=rf"{out} holds another run's files"):
        claim(out)


def _resolved_run_dir(root: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "--cfg", "hydra", "--resolve"],
        cwd=root,
        env=command_env(),
        stdout=subprocess.PIPE,
        text=True,
    )


def test_commands_started_in_the_same_second_get_different_directories(tmp_path: Path) -> None:
    import yaml

    started = [_resolved_run_dir(tmp_path) for _ in range(3)]
    dirs = [yaml.safe_load(p.communicate(timeout=120)[0])["hydra"]["run"]["dir"] for p in started]
    assert all(d.startswith("outputs/") for d in dirs)
    assert len(set(dirs)) == 3, dirs


def _activations_in(keras_file: Path) -> set[str]:
    """Which of ACTIVATIONS a saved model's config names: as a layer's `activation`, or as an
    activation layer's class (`ELU`)."""
    with zipfile.ZipFile(keras_file) as archive:
        config = json.loads(archive.read("config.json"))
    found = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("activation", "class_name") and isinstance(value, str):
                    found.add(value.lower())
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return found & set(ACTIVATIONS)


@pytest.mark.slow
def test_four_trainings_started_together_keep_their_own_results(
    make_project, tmp_path: Path
) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=1000")
    uri = own_store(tmp_path)
    env = command_env(uri)
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.train", f"activation={a}", *SMALL],
            cwd=paths.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for a in ACTIVATIONS
    ]
    for process in started:
        _, err = process.communicate(timeout=900)
        assert process.returncode == 0, err[-3000:]

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert sorted(r.data.params["activation"] for r in runs) == sorted(ACTIVATIONS)
    job_dirs = set()
    for run in runs:
        activation = run.data.params["activation"]
        # The final test accuracy is this run's own: its last epoch's test score.
        last_epoch = client.get_metric_history(run.info.run_id, "epoch/test_accuracy")
        last = max(last_epoch, key=lambda m: m.step)
        assert last.step == 2
        assert run.data.metrics["test_accuracy"] == pytest.approx(last.value, abs=1e-6)
        # The model it logged has its own activation.
        (tmp_path / activation).mkdir()
        model_dir = download_model(uri, run.info.run_id, tmp_path / activation)
        (keras_file,) = Path(model_dir).rglob("*.keras")
        assert _activations_in(keras_file) == {activation}, activation
        job_dirs.add(run.data.tags["job_dir"])
    assert len(job_dirs) == 4  # a directory each, every one claimed by its run
    for job_dir in job_dirs:
        assert (Path(job_dir) / CLAIM).is_file()
        run_json = json.loads((Path(job_dir) / "models" / "run.json").read_text())
        assert run_json["run_id"] in {r.info.run_id for r in runs}


def _search(url: str) -> int:
    """What `mlflow ui` shows: every run of every experiment, through its REST API."""
    import urllib.request

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            f"{url}/api/2.0/mlflow/{path}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    experiments = post("experiments/search", {"max_results": 100}).get("experiments", [])
    ids = [e["experiment_id"] for e in experiments]
    return len(post("runs/search", {"experiment_ids": ids, "max_results": 1000}).get("runs", []))


def _sweeps_started(paths: Any, env: dict) -> list[subprocess.Popen]:
    """Two joblib sweeps of three jobs each, on one new store: both race to create it."""
    sweep = [sys.executable, "-m", "pipeline.train", "-m", "hydra/launcher=joblib"]
    sweep += ["hydra.launcher.n_jobs=2", *SMALL, "epochs=1"]
    output = {"stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    return [
        subprocess.Popen(
            [*sweep, f"hydra.sweep.dir=multirun/{name}", f"activation={activations}"],
            cwd=paths.root,
            env=env,
            **output,
        )
        for name, activations in (("a", "relu,tanh,elu"), ("b", "gelu,silu,sigmoid"))
    ]


def _read_while_running(sweeps: list, paths: Any, env: dict, tmp_path: Path) -> tuple:
    """`mlflow ui` (its REST search, ten times a second) and `pipeline.compare` (in a loop)
    reading the store until both sweeps end: what each saw, and the UI's errors."""
    from conftest import mlflow_server

    from pipeline.sweep import parent_run_id

    running = lambda: any(s.poll() is None for s in sweeps)  # noqa: E731
    # The readers start once both parents are open, so on a store that exists, as when
    # `mlflow ui` is opened on a project's store.
    while running() and not all(parent_run_id(paths.root / "multirun" / n) for n in "ab"):
        time.sleep(0.2)
    reports, seen, failures = [], [], []

    def browse(url: str) -> None:
        while running():
            try:
                seen.append(_search(url))
            except Exception as err:  # what a user would see as an error page
                failures.append(f"{type(err).__name__}: {err}")
            time.sleep(0.1)  # a busy user; more often only takes the sweeps' CPU

    artifacts = ["--artifacts-destination", str(tmp_path / "artifacts")]
    uri = env["MLFLOW_TRACKING_URI"]
    with mlflow_server(uri, *artifacts, log=tmp_path / "server.log") as url:
        browser = threading.Thread(target=browse, args=(url,))
        browser.start()
        while running():
            compare = [sys.executable, "-m", "pipeline.compare", "--out", str(tmp_path / "r")]
            report = subprocess.run(
                compare, cwd=paths.root, env=env, capture_output=True, text=True, timeout=300
            )
            reports.append(report)
        browser.join()
    return reports, seen, failures


@pytest.mark.slow
def test_two_parallel_sweeps_lose_no_run_while_reports_and_the_ui_read_the_store(
    make_project, tmp_path: Path
) -> None:
    """No "database is locked" reaches anyone, and no run is lost."""
    import mlflow

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=1000")
    uri = own_store(tmp_path)  # new: both sweeps race to create it
    env = command_env(uri)
    sweeps = _sweeps_started(paths, env)
    reports, seen, failures = _read_while_running(sweeps, paths, env, tmp_path)
    outs = [s.communicate()[0] for s in sweeps]
    assert [s.returncode for s in sweeps] == [0, 0], "\n".join(o[-3000:] for o in outs)
    assert not failures, failures[:3]
    assert len(seen) >= 20 and len(reports) >= 3  # the readers really ran while sweeps wrote
    for report in reports:
        text = report.stdout + report.stderr
        assert "locked" not in text.lower(), text[-2000:]
        # Before the first run ends there is nothing to compare: one line, no trace.
        assert report.returncode == 0 or "no " in report.stderr, text[-2000:]
    logs = [*outs, (tmp_path / "server.log").read_text()]
    assert not any("locked" in log.lower() for log in logs)
    assert seen == sorted(seen)  # the UI's count of runs only grows
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    parents = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    children = [r for r in runs if "sweep_job" in r.data.tags]
    assert sorted(c.data.params["activation"] for c in children) == [
        "elu", "gelu", "relu", "sigmoid", "silu", "tanh"
    ]  # fmt: skip
    for child in children:
        assert child.info.status == "FINISHED" and "test_accuracy" in child.data.metrics
        history = client.get_metric_history(child.info.run_id, "epoch/test_accuracy")
        assert [m.step for m in history] == [1]


# The start of each process of the two tests below: once every process is ready, it waits
# for the file `go`, which holds the time to start at (`start`).
_AT_GO = """
import sys, time
from pathlib import Path
print("ready", flush=True)
while not Path("go").exists():
    time.sleep(0.005)
start = float(Path("go").read_text())
"""


def _run_together(tmp_path: Path, env: dict, script: str, argvs: list[list[str]]) -> None:
    """Run `_AT_GO + script` once per argument list in `argvs`, in `tmp_path`, all started at
    the same moment; each must exit 0."""
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_GO + script, *argv],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    assert [p.stdout.readline() for p in started] == ["ready\n"] * len(argvs)
    # Renamed into place: a reader polling for "go" must never see it empty.
    (tmp_path / "go.tmp").write_text(str(time.time() + 0.5))
    (tmp_path / "go.tmp").rename(tmp_path / "go")
    errors = [p.communicate(timeout=120)[1] for p in started]
    assert [p.returncode for p in started] == [0] * len(argvs), "\n".join(errors)[-3000:]


# On a new SQLite store, either the check a training makes first (`connect`) or a report's
# first read of the store.
_FIRST_TOUCH = """
from pipeline.tracking.store import connect, mlflow_client, tracking_uri
time.sleep(max(0.0, start - time.time()))
if sys.argv[1] == "train":
    connect(Path.cwd(), "mnist")
else:
    mlflow_client(tracking_uri(Path.cwd())).search_experiments()
"""


@pytest.mark.slow  # four processes at once
def test_reports_opened_beside_the_first_training_leave_the_new_store_whole(
    tmp_path: Path,
) -> None:
    """Opening a SQLite store creates it: two processes running MLflow's migrations on one new
    file at once break it (alembic: "expected to match one row"). Readers (`compare`) wait
    for a creator as trainings do, so every process here ends well and the store is whole."""
    import mlflow

    env = command_env(own_store(tmp_path))
    _run_together(tmp_path, env, _FIRST_TOUCH, [["train"], ["report"], ["train"], ["report"]])
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    assert {e.name for e in client.search_experiments()} == {"Default", "mnist"}
    assert client.search_runs([client.get_experiment_by_name("mnist").experiment_id]) == []


# A run every 0.25 s, as a sweep's jobs start theirs, that records the round's dataset, the
# same one (name and digest) at the same moment in every process: a race between the
# processes to add it.
_SAME_DATASET = """
from pipeline.tracking.runs import active_run, log_datasets
from pipeline.tracking.store import connect
rounds = int(sys.argv[1])
for i in range(rounds):
    time.sleep(max(0.0, start + 0.25 * i - time.time()))
    with active_run(connect(Path.cwd(), "mnist"), run_name=f"round{i}"):
        log_datasets("/data/mnist", [["mnist-train", "training", f"round{i}",
                                               (60000, 784), (60000, 10)]])
"""


@pytest.mark.slow  # six processes for 16 s: a race, run often enough to be seen
def test_runs_started_together_record_the_same_dataset(tmp_path: Path) -> None:
    """MLflow looks for a dataset before adding it: two runs that record a new one at the same
    moment both add it, and one of them breaks the store's unique key. That run must not fail.
    (Seen in a sweep of six jobs started at once, each recording the same training data.)"""
    import mlflow

    uri = own_store(tmp_path)
    rounds, processes = 16, 6
    _run_together(tmp_path, command_env(uri), _SAME_DATASET, [[str(rounds)]] * processes)

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert len(runs) == rounds * processes and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        (used,) = run.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == ("mnist-train", run.info.run_name)
