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
from conftest import OFFLINE, ROOT, download_model

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
        env={**os.environ, "PYTHONPATH": str(ROOT)},
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
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
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


@pytest.mark.slow
def test_reports_and_the_ui_read_the_store_while_a_parallel_sweep_writes(
    make_project, tmp_path: Path
) -> None:
    """No "database is locked" reaches anyone, and no run is lost."""
    import mlflow
    from conftest import mlflow_server

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=1000")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
    # The store exists before its readers start, as when `mlflow ui` is opened on a project's
    # store (a server and a sweep both creating a new SQLite file would race in MLflow's
    # migrations, which the pipeline's processes serialize among themselves).
    create = (
        "from pathlib import Path; from pipeline.tracking.store import experiment_id, tracking_uri;"
        "experiment_id(tracking_uri(Path('.')))"
    )
    subprocess.run([sys.executable, "-c", create], cwd=paths.root, env=env, check=True)
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "seed=range(6)",
            *SMALL,
            "epochs=1",
        ],
        cwd=paths.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reports, seen = [], []
    no_jobs = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server_log = tmp_path / "server.log"
    failures: list[str] = []

    def browse(url: str) -> None:
        """The UI's reader, as often as it can: every run, again and again."""
        while sweep.poll() is None:
            try:
                seen.append(_search(url))
            except Exception as err:  # what a user would see as an error page
                failures.append(f"{type(err).__name__}: {err}")

    with mlflow_server(
        uri, "--artifacts-destination", str(tmp_path / "artifacts"), log=server_log, env=no_jobs
    ) as url:
        browser = threading.Thread(target=browse, args=(url,))
        browser.start()
        while sweep.poll() is None:
            report = subprocess.run(
                [sys.executable, "-m", "pipeline.compare", "--out", str(tmp_path / "report")],
                cwd=paths.root,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            reports.append(report)
        browser.join()
    out = sweep.communicate()[0]
    assert not failures, failures[:3]
    assert len(seen) >= 20
    assert sweep.returncode == 0, out[-3000:]
    assert len(reports) >= 3  # the readers really ran while the sweep wrote
    for report in reports:
        text = report.stdout + report.stderr
        assert "locked" not in text.lower(), text[-2000:]
        # Before the first run is written there is nothing to compare: one line, no trace.
        assert report.returncode == 0 or "no " in report.stderr, text[-2000:]
    assert "locked" not in out.lower() and "locked" not in server_log.read_text().lower()
    assert seen == sorted(seen)  # the UI's count of runs only grows
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    children = [r for r in runs if "sweep_job" in r.data.tags]
    statuses = sorted(r.info.status for r in children)
    assert statuses == ["FINISHED"] * 6, (statuses, out[-3000:])
    assert all("test_accuracy" in r.data.metrics for r in children)


# One process of the test below: once every process is ready (the file `go` holds the time to
# start at), a run every 0.25 s, as a sweep's jobs start theirs, that records the round's
# dataset, the same one (name and digest) at the same moment in every process: a race between
# the processes to add it.
_SAME_DATASET = """
import sys, time
from pathlib import Path
from pipeline.tracking.runs import active_run, log_datasets
from pipeline.tracking.store import connect
rounds = int(sys.argv[1])
print("ready", flush=True)
while not Path("go").exists():
    time.sleep(0.005)
start = float(Path("go").read_text())
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

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": uri}
    rounds, processes = 16, 6
    started = [
        subprocess.Popen(
            [sys.executable, "-c", _SAME_DATASET, str(rounds)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    assert [p.stdout.readline() for p in started] == ["ready\n"] * processes
    (tmp_path / "go").write_text(str(time.time() + 0.5))
    errors = [p.communicate(timeout=120)[1] for p in started]
    assert [p.returncode for p in started] == [0] * processes, "\n".join(errors)[-3000:]

    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert len(runs) == rounds * processes and all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        (used,) = run.inputs.dataset_inputs
        assert (used.dataset.name, used.dataset.digest) == ("mnist-train", run.info.run_name)
