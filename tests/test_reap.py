"""Runs whose process vanished (SIGKILL, the OOM killer, a node lost): every run records where
it runs and beats while it does; `python -m pipeline.tracking reap` and every training's start
end such runs as FAILED, tagged `error: vanished: ...`, and leave live ones alone."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import OFFLINE, command_env, own_store, python

from pipeline.tracking.liveness import _iso, process_start, reap, reap_here
from pipeline.tracking.store import Store, connect

HOST = socket.gethostname()


def _gone_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite store of the module's own: a reap reads every RUNNING run of its experiments."""
    return f"sqlite:///{tmp_path_factory.mktemp('reap') / 'mlflow.db'}"


@pytest.fixture()
def store(database: str, request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    """An experiment of the test's own in the module's store."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", database)
        return connect(tmp_path, request.node.name)


def _running(store: Store, name: str, **tags: str) -> str:
    """A RUNNING run of the pipeline (its `entry_point` tag), with `tags`; its id."""
    import mlflow

    client = mlflow.MlflowClient(store.uri)
    run = client.create_run(store.experiment_id, run_name=name, tags={"entry_point": "cli", **tags})
    return run.info.run_id


def _status(store: Store, run_id: str) -> tuple[str, str | None]:
    import mlflow

    run = mlflow.MlflowClient(store.uri).get_run(run_id)
    return run.info.status, run.data.tags.get("error")


def test_the_reap_ends_gone_processes_and_stale_runs_and_leaves_live_ones(store: Store) -> None:
    now, old = _iso(time.time()), _iso(time.time() - 3600)
    me = {"host": HOST, "pid": str(os.getpid()), "process_start": process_start(os.getpid())}
    runs = {
        "dead pid here": _running(store, "a", host=HOST, pid=str(_gone_pid()), heartbeat=now),
        # The pid exists, but is another process than the one that started the run.
        "reused pid": _running(store, "b", **{**me, "process_start": old}, heartbeat=now),
        "stale elsewhere": _running(store, "c", host="other-host", pid="1", heartbeat=old),
        "live elsewhere": _running(store, "d", host="other-host", pid="1", heartbeat=now),
        # Alive here: its process is the judge, not a late beat.
        "live here": _running(store, "e", **me, heartbeat=old),
    }
    found = reap(store.uri, [store.experiment_id], stale_minutes=10)
    assert {v.run_id for v in found} == {runs[k] for k in ("dead pid here", "reused pid",
                                                            "stale elsewhere")}  # fmt: skip
    for key in ("dead pid here", "reused pid", "stale elsewhere"):
        status, error = _status(store, runs[key])
        assert status == "FAILED", key
        assert error.startswith("vanished: no heartbeat since "), error
    assert _status(store, runs["stale elsewhere"])[1] == (
        f"vanished: no heartbeat since {old} (host other-host, pid 1)"
    )
    assert _status(store, runs["live elsewhere"]) == ("RUNNING", None)
    assert _status(store, runs["live here"]) == ("RUNNING", None)


def test_a_run_without_a_beat_is_judged_by_its_start_unless_not_the_pipelines(
    store: Store,
) -> None:
    import mlflow

    client = mlflow.MlflowClient(store.uri)
    hour_ago = int((time.time() - 3600) * 1000)
    ours = client.create_run(store.experiment_id, start_time=hour_ago, tags={"sweep": "parent"})
    foreign = client.create_run(store.experiment_id, start_time=hour_ago)
    found = reap(store.uri, [store.experiment_id], stale_minutes=10)
    assert [v.run_id for v in found] == [ours.info.run_id]
    assert _status(store, foreign.info.run_id) == ("RUNNING", None)


def test_a_training_start_reaps_this_hosts_vanished_runs_in_well_under_a_second(
    store: Store, capsys: pytest.CaptureFixture
) -> None:
    dead = _running(store, "dead", host=HOST, pid=str(_gone_pid()), heartbeat=_iso(time.time()))
    # Another host's run, however stale, is the explicit reap's to judge, not a start's.
    stale = _running(store, "stale", host="other-host", pid="1", heartbeat=_iso(0))
    start = time.perf_counter()
    reap_here(store)
    seconds = time.perf_counter() - start
    assert seconds < 0.5, seconds
    assert _status(store, dead)[0] == "FAILED"
    assert _status(store, stale) == ("RUNNING", None)
    assert f"MLflow run dead ({dead}) FAILED: vanished: " in capsys.readouterr().err


@pytest.mark.parametrize("stale", ["abc", "0", "-5", "nan"])
def test_a_bad_stale_value_is_one_line(tmp_path: Path, stale: str) -> None:
    result = python(tmp_path, "-m", "pipeline.tracking", "reap", "--stale", stale, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --stale {stale!r}: must be a number of minutes above 0"
    ]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
def test_a_training_killed_with_sigkill_is_reaped_as_vanished(make_project, tmp_path) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    uri = own_store(tmp_path)
    env = command_env(uri)
    job = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", *OFFLINE, "data.train_samples=2000",
         "data.test_samples=500", "model.hidden_units=[16]", "epochs=50"],
        cwd=paths.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    for line in job.stdout:
        if line.startswith("Epoch 2/"):  # the first epoch is logged
            break
    job.kill()
    job.wait()
    client = mlflow.MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert run.info.status == "RUNNING"  # what SIGKILL leaves
    tags = run.data.tags
    assert (tags["host"], tags["pid"]) == (HOST, str(job.pid))
    assert tags["process_start"] and tags["heartbeat"]

    result = python(paths.root, "-m", "pipeline.tracking", "reap", env={"MLFLOW_TRACKING_URI": uri})
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f"reaped 1 vanished run(s) in {uri} (stale after 10 min)"
    assert lines[0].startswith(f"{run.info.run_id} {run.info.run_name}: FAILED, vanished: ")
    reaped = client.get_run(run.info.run_id)
    assert reaped.info.status == "FAILED"
    assert reaped.data.tags["error"] == (
        f"vanished: no heartbeat since {tags['heartbeat']} (host {HOST}, pid {job.pid})"
    )
    # Once ended, it is not reaped again.
    assert reap(uri, [run.info.experiment_id], stale_minutes=10) == []
