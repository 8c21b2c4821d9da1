"""Faults injected for real: interrupted training, diverging runs, unsafe model files, and
what a run must never record."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import OFFLINE, ROOT, command_env, own_store
from omegaconf import OmegaConf

from pipeline.tracking.search import search_runs
from pipeline.tracking.store import mlflow_client

SMALL = [*OFFLINE, "data.train_samples=3000", "data.test_samples=1000", "model.hidden_units=[64]"]


def _default_sigint() -> None:
    # A shell starts background commands with SIGINT ignored, and Python keeps a signal that
    # was ignored at its start ignored; the CLI must start as a terminal would start it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(cwd: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", *args],
        cwd=cwd,
        # A crash prints every thread's Python stack (faulthandler).
        env={**os.environ, "PYTHONPATH": str(ROOT), "PYTHONFAULTHANDLER": "1", **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint,
    )


def cli_runs(uri: str) -> list:
    """The runs in the SQLite store at `uri` so far, read as the pipeline's reports read it;
    none before the CLI has created the store (reading it would create it)."""
    if not Path(uri.removeprefix("sqlite:///")).exists():
        return []
    return search_runs(uri, "mnist", "", [], 1000) or []


def losses(uri: str, run: Any) -> list:
    """The run's per-epoch training losses logged so far."""
    return mlflow_client(uri).get_metric_history(run.info.run_id, "epoch/train_loss")


def still_running(proc: subprocess.Popen, deadline: float) -> None:
    """Fail, showing what the CLI printed, if it has ended or `deadline` has passed."""
    if proc.poll() is None and time.monotonic() < deadline:
        return
    proc.kill()
    _, stderr = proc.communicate()
    pytest.fail(f"the CLI ended with {proc.returncode} or timed out:\n{stderr[-3000:]}")


@pytest.mark.slow
def test_interrupted_training_ends_killed_and_leaves_no_model(make_project, tmp_path: Path) -> None:
    """Ctrl-C, then `kill`, each during a training of its own: the shell's status for the
    signal, a KILLED run, no model; then the next run starts cleanly."""
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = own_store(tmp_path)
    for interrupted, (sig, status) in enumerate([(signal.SIGINT, 130), (signal.SIGTERM, 143)]):
        proc = start_cli(paths.root, *SMALL, "epochs=500", env={"MLFLOW_TRACKING_URI": uri})
        try:
            deadline = time.monotonic() + 120
            # Interrupt once training is under way: the run has logged an epoch.
            while sum("epoch/train_loss" in r.data.metrics for r in cli_runs(uri)) <= interrupted:
                still_running(proc, deadline)
                time.sleep(0.5)
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=60)
        finally:
            proc.kill()
        assert proc.returncode == status, stderr
        assert stderr.strip().splitlines()[-1].startswith("interrupted:")
        run = max(cli_runs(uri), key=lambda r: r.info.start_time)
        assert run.info.status == "KILLED"
        assert run.data.tags["error"].startswith(
            "KeyboardInterrupt" if sig == signal.SIGINT else "Terminated: stopped by signal SIGTERM"
        )
        models = Path(run.data.tags["job_dir"]) / "models"
        assert not models.exists() or list(models.iterdir()) == []  # nothing half-written
    # The next run starts cleanly.
    proc = start_cli(paths.root, *SMALL, "epochs=1", env={"MLFLOW_TRACKING_URI": uri})
    proc.communicate(timeout=300)
    assert proc.returncode == 0
    assert sorted(r.info.status for r in cli_runs(uri)) == ["FINISHED", "KILLED", "KILLED"]


@pytest.mark.slow
def test_diverging_run_fails_with_the_epoch_and_exits_non_zero(
    make_project, tmp_path: Path
) -> None:
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = own_store(tmp_path)
    proc = start_cli(paths.root, *SMALL, "epochs=3", "optimizer.learning_rate=1e30",
                     env={"MLFLOW_TRACKING_URI": uri})  # fmt: skip
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert stderr.strip().splitlines()[-1] == "error: loss became NaN at epoch 1"
    (run,) = cli_runs(uri)
    assert run.info.status == "FAILED"
    assert run.data.tags["error"] == "DivergedError: loss became NaN at epoch 1"
    assert run.data.metrics.get("epoch/test_accuracy") is None  # stopped at the first NaN


def test_a_model_carrying_code_is_refused(tmp_path: Path) -> None:
    import keras

    from pipeline.errors import ModelError
    from pipeline.models.scoring import load_model

    model = keras.Sequential([keras.Input((784,)), keras.layers.Lambda(lambda x: x * 2)])
    path = tmp_path / "model.keras"
    model.save(path)
    with pytest.raises(ModelError, match="refusing to load .*model.keras: .*[Ll]ambda"):
        load_model(path)


def test_environment_variables_are_never_logged(small_project, monkeypatch, tmp_path) -> None:
    import mlflow

    from pipeline.fit import fit
    from pipeline.paths import Paths

    secret = "s3cr3t-token-value"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("MNIST_MIRROR", f"https://user:{secret}@mirror.example/")
    paths, cfg = small_project
    result = fit(cfg, Paths(root=paths.root, out=tmp_path))
    run = mlflow.MlflowClient().get_run(result.run_id)
    recorded = json.dumps([run.data.params, run.data.tags])
    assert secret not in recorded
    assert "mirror.example" not in recorded
    # Params are config keys only.
    for key in run.data.params:
        assert OmegaConf.select(cfg, key, default=KeyError) is not KeyError, key


@pytest.mark.slow
def test_resume_continues_an_interrupted_run_in_the_same_mlflow_run(
    make_project, tmp_path: Path
) -> None:
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = own_store(tmp_path)
    env = {"MLFLOW_TRACKING_URI": uri}
    # Epochs of a size that leaves time to interrupt after the second, and some to resume.
    args = [*SMALL, "model.hidden_units=[1024,1024]", "epochs=15"]
    proc = start_cli(paths.root, *args, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:  # interrupt after at least two completed epochs
            runs = cli_runs(uri)
            if runs and len(losses(uri, runs[0])) >= 2:
                break
            still_running(proc, deadline)
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    (killed,) = cli_runs(uri)
    assert killed.info.status == "KILLED"
    assert any((paths.root / ".resume").iterdir())

    resumed = start_cli(paths.root, *args, "train.resume=true", env=env)
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr[-2000:]
    assert f"resuming MLflow run {killed.info.run_id}" in stdout
    assert "Epoch 1/15" not in stdout + stderr  # the finished epochs were not trained again
    (run,) = cli_runs(uri)
    assert run.info.run_id == killed.info.run_id and run.info.status == "FINISHED"
    steps = {m.step for m in losses(uri, run)}
    assert steps == set(range(1, 16))
    assert "test_accuracy" in run.data.metrics
    progress = [p for p in (paths.root / ".resume").iterdir() if p.is_dir()]
    assert progress == []  # dropped once complete


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_held_work_interrupts_right_after_it(signum: int) -> None:
    """An epoch's backup and its logging happen whole (pipeline.fit): a signal that comes
    during them is acted on once they are done, as it would have been."""
    from pipeline.cli import SignalsHeld, Terminated, handle_signals

    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    handle_signals()  # SIGTERM raises Terminated, as in the commands
    # SIGINT as a terminal starts Python (pytest may have been started with it ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    done = []
    try:
        with pytest.raises(KeyboardInterrupt) as raised, SignalsHeld() as held:
            signal.raise_signal(signum)
            assert held.pending()
            done.append("backup")  # not cut off by the signal
            done.append("logging")
        assert done == ["backup", "logging"]
        assert isinstance(raised.value, Terminated) == (signum == signal.SIGTERM)
        # And the usual handling is back.
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signum)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])


@pytest.mark.parametrize(
    ("signum", "delay"), [(signal.SIGINT, 0.02), (signal.SIGTERM, None)], ids=["2-in-a-step", "15"]
)
def test_a_signal_during_training_ends_it_early_and_acts_outside_keras(
    small_project, tmp_path: Path, signum: int, delay: float | None
) -> None:
    """A signal during `fit` ends the training the way Keras' own callbacks do, and is acted
    on once `fit` has returned: never raised inside Keras' or TensorFlow's code. The epoch it
    cuts short is not recorded. SIGINT lands while TensorFlow runs the second epoch's steps;
    SIGTERM comes as the first epoch ends, and so ends the second one early."""
    import threading
    import traceback

    import mlflow

    from pipeline.cli import Terminated, handle_signals
    from pipeline.fit import fit
    from pipeline.paths import Paths

    paths, cfg = small_project
    cfg = OmegaConf.merge(cfg, {"epochs": 50})
    saved = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    handle_signals()
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def signal_after_first(epoch: int, logs: dict) -> bool:
        if epoch == 0 and delay is None:
            os.kill(os.getpid(), signum)
        elif epoch == 0:
            threading.Timer(delay, os.kill, (os.getpid(), signum)).start()
        return False

    out = tmp_path / "run"
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            fit(cfg, Paths(root=paths.root, out=out), on_epoch=signal_after_first)
    finally:
        signal.signal(signal.SIGTERM, saved[0])
        signal.signal(signal.SIGINT, saved[1])
    assert isinstance(raised.value, Terminated) == (signum == signal.SIGTERM)
    tb = traceback.extract_tb(raised.value.__traceback__)
    frames = [(Path(f.filename).name, f.name) for f in tb]
    # Raised as the held block ends (then, for SIGTERM, by its handler), in `_train`, once
    # Keras' fit has returned: no frame of Keras or TensorFlow is on the way.
    assert ("fit.py", "_train") in frames and ("cli.py", "__exit__") in frames, frames
    assert frames.index(("cli.py", "__exit__")) >= len(frames) - 2, frames
    assert not [f.filename for f in tb if "/keras/" in f.filename or "tensorflow" in f.filename]
    (run,) = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"tags.job_dir = '{out}'", output_format="list"
    )
    assert run.info.status == "KILLED"
    steps = [
        m.step
        for m in mlflow.MlflowClient().get_metric_history(run.info.run_id, "epoch/train_loss")
    ]
    # Ended early; the epochs recorded are whole ones, and with the signal at the first
    # epoch's end, only that one.
    assert steps == ([1] if delay is None else list(range(1, len(steps) + 1))) and len(steps) < 50
    assert not (out / "models").exists() or list((out / "models").iterdir()) == []


@pytest.fixture(params=["size=256k", "ro"], ids=["disk-full", "read-only"])
def bad_disk(request: pytest.FixtureRequest, tmp_path: Path):
    """A real file system that is full (256 KiB) or read-only, mounted for the test."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", request.param, "tmpfs", str(mount)],
                            capture_output=True)  # fmt: skip
    if result.returncode != 0:
        pytest.skip(f"mounting a tmpfs needs root: {result.stderr.decode().strip()}")
    yield mount, ("No space left on device" if "size" in request.param
                  else "Read-only file system")  # fmt: skip
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.slow
def test_unwritable_output_gives_one_line_and_a_failed_run(make_project, bad_disk) -> None:
    import yaml

    from pipeline.config import compose

    mount, reason = bad_disk
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    params = OmegaConf.to_container(
        compose([*SMALL, "epochs=1", "model.hidden_units=[256]"]), resolve=True, enum_to_str=True
    )
    (paths.root / "params.yaml").write_text(yaml.safe_dump(params))
    (paths.root / "models").symlink_to(mount)  # the DVC stage's models/ is on that disk
    uri = f"sqlite:///{paths.root / 'mlflow.db'}"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.fit"],
        cwd=paths.root, env=command_env(uri),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cannot write") and last.endswith(reason), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert list(mount.iterdir()) == []  # no partial file left behind
    (run,) = cli_runs(uri)
    assert run.info.status == "FAILED" and reason in run.data.tags["error"]


def test_progress_cut_off_while_it_was_written_starts_afresh(tmp_path: Path, capsys) -> None:
    from pipeline.resume import interrupted_run

    (tmp_path / "state").mkdir()
    (tmp_path / "run.json").write_text(json.dumps({"run_id": "abc"}))
    # Stopped before its first epoch was backed up: the run goes on from the start.
    assert interrupted_run(tmp_path) == "abc"
    metadata = tmp_path / "state" / "training_metadata.json"
    metadata.write_text(json.dumps({"epoch": 2}))
    (tmp_path / "state" / "latest.weights.h5").write_bytes(b"weights")
    assert interrupted_run(tmp_path) == "abc"
    # A signal while Keras wrote its backup leaves the epoch record empty: no resume.
    metadata.write_text("")
    assert interrupted_run(tmp_path) is None
    assert "cut off while it was written; starting afresh" in capsys.readouterr().out
