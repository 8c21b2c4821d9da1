"""Sharing data and models through a DVC remote, end to end with real DVC and git: one
repository reproduces a small pipeline and pushes to a local directory remote; a fresh git
clone pulls and has the raw data, the prepared arrays and the model, with no stage re-run."""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_dvc import GIT_ENV, STAGES, sh

from mnist_support.project import make_repo

# Runs `dvc repro`, push and pull.
pytestmark = pytest.mark.slow

# Small enough that the whole module runs in well under a minute, big enough to learn digits.
SMALL = {"train_samples": 2000, "test_samples": 500}
# Every output DVC caches (cache: true), hence what `dvc pull` must bring back.
PULLED = (
    "data/raw/mnist",
    "data/prepared/mnist",
    "reports/plots/samples.png",
    "models/model.keras",
    "models/run.json",
    "models/predictions.npz",
    "reports/plots/learning_curves.png",
    "reports/plots/confusion_matrix.png",
    "reports/plots/misclassified.png",
)


def files_under(root: Path, rel: str) -> list[str]:
    """The files of output `rel` (a file or a directory), relative to `root`, sorted."""
    path = root / rel
    if path.is_file():
        return [rel]
    return sorted(str(p.relative_to(root)) for p in path.rglob("*") if p.is_file())


def mtimes(root: Path) -> dict[str, int]:
    return {f: (root / f).stat().st_mtime_ns for rel in PULLED for f in files_under(root, rel)}


@pytest.fixture(scope="module")
def env(mnist_dir: Path) -> dict[str, str]:
    """The producer's environment: real data from the local copy, and the default MLflow
    store at the repository's root (MLFLOW_TRACKING_URI unset), as on a developer's machine."""
    env = {**os.environ, **GIT_ENV, "MNIST_MIRROR": str(mnist_dir)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


@pytest.fixture(scope="module")
def storage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The remote: a plain directory, as a NAS mount or a shared disk would be."""
    return tmp_path_factory.mktemp("storage")


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str], storage: Path) -> Path:
    """The project in a fresh git repo, reproduced on a small configuration, pushed to the
    remote, and committed (params, dvc.lock, remote config) as a team member would."""
    repo = tmp_path_factory.mktemp("origin")
    # Only the mirror: a stage that ever runs where the mirror is absent fails loudly.
    params = {"data.sources": [], "data.retries": 1, "data.timeout": 10.0, "epochs": 1}
    params.update({f"data.{k}": v for k, v in SMALL.items()})
    make_repo(repo, env, "small configuration", params)

    out = sh(repo, "dvc", "repro", env=env).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    # An absolute path: a relative one would be resolved against each clone's .dvc/.
    sh(repo, "dvc", "remote", "add", "-d", "storage", str(storage), env=env)
    sh(repo, "dvc", "push", env=env)
    # Everything the cache holds is on the remote now.
    assert json.loads(sh(repo, "dvc", "status", "--cloud", "--json", env=env).stdout) == {}
    sh(repo, "git", "add", "-A", env=env)
    sh(repo, "git", "commit", "-qm", "pipeline outputs, shared through the remote", env=env)
    return repo


@pytest.fixture(scope="module")
def clone_env(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The consumer's environment: no MNIST anywhere, so data can only come from the remote."""
    return {**env, "MNIST_MIRROR": str(tmp_path_factory.mktemp("no-mnist") / "missing")}


@pytest.fixture(scope="module")
def clone(
    origin: Path, tmp_path_factory: pytest.TempPathFactory, clone_env: dict[str, str]
) -> tuple[Path, str]:
    """A fresh git clone of `origin` after `dvc pull`; returns it and the pull's output."""
    dest = tmp_path_factory.mktemp("clone") / "repo"
    sh(origin, "git", "clone", "-q", str(origin), str(dest), env=clone_env)
    for rel in PULLED:
        assert not (dest / rel).exists(), f"{rel} must come from the remote, not from git"
    # Only the remote holds the data now: the producer's cache cannot serve the pull.
    shutil.rmtree(origin / ".dvc" / "cache")
    pulled = sh(dest, "dvc", "pull", env=clone_env)
    return dest, pulled.stdout + pulled.stderr


def test_push_fills_the_remote_and_commits_its_config(origin: Path, storage: Path) -> None:
    config = (origin / ".dvc" / "config").read_text()
    assert "remote = storage" in config and str(storage) in config
    committed = sh(origin, "git", "ls-files").stdout.splitlines()
    assert {"dvc.lock", ".dvc/config", "params.yaml"} <= set(committed)
    assert not set(committed) & {"mlflow.db", "data/raw/mnist", "models/model.keras"}
    assert sh(origin, "git", "status", "--porcelain").stdout == ""
    # DVC 3 keeps objects under files/md5/ on the remote.
    assert any((storage / "files" / "md5").rglob("*"))


def test_pull_restores_every_output_byte_for_byte(origin: Path, clone: tuple[Path, str]) -> None:
    repo, out = clone
    expected = sum(len(files_under(origin, rel)) for rel in PULLED)
    assert f"files fetched and {expected} files added" in out, out
    for rel in PULLED:
        ours, theirs = files_under(repo, rel), files_under(origin, rel)
        assert ours == theirs, rel
        for name in ours:
            assert filecmp.cmp(repo / name, origin / name, shallow=False), name
    assert len(files_under(repo, "data/raw/mnist")) == 5  # the IDX files and checksums.json


def test_clone_is_clean_and_no_stage_runs(clone: tuple[Path, str], clone_env) -> None:
    repo, _ = clone
    before = mtimes(repo)
    assert json.loads(sh(repo, "dvc", "status", "--json", env=clone_env).stdout) == {}
    dry = sh(repo, "dvc", "repro", "--dry", env=clone_env).stdout
    assert "Running stage" not in dry, dry
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in dry
    # A real `dvc repro` too: any stage it ran would fail (no mirror) or retrain.
    again = sh(repo, "dvc", "repro", env=clone_env).stdout
    assert "Running stage" not in again, again
    assert mtimes(repo) == before
    # Train and evaluate log to MLflow: had either run, the default store would exist.
    assert not (repo / "mlflow.db").exists() and not (repo / "mlruns").exists()
    assert sh(repo, "git", "status", "--porcelain", env=clone_env).stdout == ""


def test_pulled_arrays_and_model_are_usable(clone: tuple[Path, str]) -> None:
    import keras

    repo, _ = clone
    prepared = repo / "data" / "prepared" / "mnist"
    shapes = {p.stem: np.load(p, allow_pickle=False).shape for p in prepared.glob("*.npy")}
    n_train, n_test = SMALL["train_samples"], SMALL["test_samples"]
    assert shapes == {
        "x_train": (n_train, 784),
        "y_train": (n_train, 10),
        "x_test": (n_test, 784),
        "y_test": (n_test, 10),
    }
    x = np.load(prepared / "x_test.npy") / np.float32(255)  # stored as uint8 pixels
    y = np.load(prepared / "y_test.npy")
    model = keras.saving.load_model(repo / "models" / "model.keras")
    probs = model.predict(x, verbose=0)
    assert probs.shape == (n_test, 10)
    accuracy = float(np.mean(probs.argmax(axis=1) == y.argmax(axis=1)))
    # The very model evaluate scored, and one that has learnt digits.
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=2 / n_test)
    assert accuracy > 0.8
