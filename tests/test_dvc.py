"""End to end through DVC, in a temporary git copy of the project: `dvc repro` with the seed's
configuration on the full dataset, then `dvc exp run -S` experiments."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import assert_run_holds

from mnist_support.project import make_repo

# Runs `dvc repro` on the full data.
pytestmark = pytest.mark.slow

STAGES = ("download", "preprocess", "train", "evaluate")
GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def sh(cwd: Path, *cmd: str, check: bool = True, env: dict | None = None):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert result.returncode == 0, f"{cmd}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def env(http_mirror: str) -> dict[str, str]:
    """The environment of every command: data over HTTP, and the default MLflow store (at
    the project's root) since MLFLOW_TRACKING_URI is unset."""
    env = {**os.environ, **GIT_ENV, "MNIST_MIRROR": http_mirror}
    env.pop("MLFLOW_TRACKING_URI")
    return env


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, env: dict[str, str]) -> Path:
    """The project's files, as git would commit them, in a fresh git repo."""
    dest = tmp_path_factory.mktemp("repo")
    make_repo(dest, env, "baseline")
    return dest


def client(repo: Path):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")


def runs(repo: Path) -> list:
    c = client(repo)
    return c.search_runs([c.get_experiment_by_name("mnist").experiment_id])


@pytest.fixture(scope="module")
def reproduced(repo: Path, env: dict[str, str]) -> tuple[Path, str]:
    result = sh(repo, "dvc", "repro", env=env)
    return repo, result.stdout


def test_repro_runs_every_stage_and_reproduces_the_seed(reproduced, env) -> None:
    repo, out = reproduced
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    # The seed: about 98.9% train and 97.8% test accuracy after 5 epochs of Dense(512, relu).
    assert metrics["test_accuracy"] >= 0.975
    assert metrics["train_accuracy"] > metrics["test_accuracy"]
    assert metrics["generalization_gap"] == pytest.approx(
        metrics["train_accuracy"] - metrics["test_accuracy"], abs=1e-6
    )
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json", env=env).stdout)
    assert shown[""]["data"]["reports/metrics.json"]["data"] == metrics


def test_nothing_to_do_after_repro(reproduced, env) -> None:
    repo, _ = reproduced
    assert "up to date" in sh(repo, "dvc", "status", env=env).stdout
    again = sh(repo, "dvc", "repro", env=env).stdout
    assert "Running stage" not in again
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in again


def test_plots_show_train_versus_test_per_epoch(reproduced, env) -> None:
    repo, _ = reproduced
    shown = json.loads(sh(repo, "dvc", "plots", "show", "--json", env=env).stdout)["data"]
    (curves,) = [v for k, v in shown.items() if k.startswith("Accuracy per epoch")]
    points = curves[0]["content"]["data"]["values"]
    assert "train_accuracy" in json.dumps(points) and "test_accuracy" in json.dumps(points)
    assert sorted({int(float(p["epoch"])) for p in points}) == [1, 2, 3, 4, 5]
    assert any(k.startswith("Confusion matrix") for k in shown)


def test_dvc_run_is_in_the_project_store(reproduced) -> None:
    from pipeline.tracking.params import dvc_dir_md5

    repo, _ = reproduced
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    run_id = json.loads((repo / "models" / "run.json").read_text())["run_id"]
    run = client(repo).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "mlp-relu-rmsprop-e5-b128"
    assert run.data.tags["entry_point"] == "dvc"
    assert_run_holds(run, metrics)
    history = client(repo).get_metric_history(run_id, "epoch/train_accuracy")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]
    # The data tag is the hash DVC itself recorded for the prepared data.
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    outs = lock["stages"]["preprocess"]["outs"]
    (prepared,) = [o for o in outs if o["path"] == "data/prepared/mnist"]
    md5 = dvc_dir_md5(repo / "data/prepared/mnist")
    assert run.data.tags["dvc_data_md5"] == prepared["md5"] == md5
    assert (repo / "mlruns").is_dir()


def test_exp_run_set_param_changes_what_the_stages_use(reproduced, env) -> None:
    repo, _ = reproduced
    before = {r.info.run_id for r in runs(repo)}
    out = sh(repo, "dvc", "exp", "run", "-S", "activation=elu", "-S", "epochs=1", env=env).stdout
    assert "Running stage 'train'" in out and "Running stage 'evaluate'" in out
    assert "Running stage 'download'" not in out and "Running stage 'preprocess'" not in out
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert (params["activation"], params["epochs"]) == ("elu", 1)
    (new,) = [r for r in runs(repo) if r.info.run_id not in before]
    assert new.data.params["activation"] == "elu" and new.data.params["epochs"] == "1"
    assert new.info.status == "FINISHED" and new.data.tags["entry_point"] == "dvc"
    assert new.data.tags.get("dvc_exp_name")
    shown = sh(repo, "dvc", "exp", "show", "--csv", env=env).stdout
    header, *rows = shown.strip().splitlines()
    for column in ("activation", "epochs", "train_accuracy", "test_accuracy", "generalization_gap"):
        assert column in header
    assert any(new.data.tags["dvc_exp_name"] in row and ",elu," in row for row in rows)


def test_exp_run_with_a_bad_value_fails_before_any_stage(reproduced, env) -> None:
    repo, _ = reproduced
    before = len(runs(repo))
    result = sh(repo, "dvc", "exp", "run", "-S", "activation=relu7", check=False, env=env)
    assert result.returncode != 0
    assert "relu7" in result.stderr + result.stdout
    assert "Running stage" not in result.stdout
    assert len(runs(repo)) == before


def test_queued_experiments_land_in_the_project_store(reproduced, env) -> None:
    import time

    repo, _ = reproduced
    before = {r.info.run_id for r in runs(repo)}
    sh(
        repo,
        "dvc",
        "exp",
        "run",
        "--queue",
        "-S",
        "activation=tanh,sigmoid",
        "-S",
        "epochs=1",
        env=env,
    )
    sh(repo, "dvc", "queue", "start", "-j", "2", env=env)
    try:
        deadline = time.monotonic() + 600
        while True:
            status = sh(repo, "dvc", "queue", "status", env=env).stdout
            if not any(word in status for word in ("Queued", "Running")):
                break
            assert time.monotonic() < deadline, status
            time.sleep(3)
    finally:
        sh(repo, "dvc", "queue", "stop", env=env, check=False)
    assert status.count("Success") == 2, status
    # They ran in copies under .dvc/tmp/exps, yet logged into the project's store.
    new = [r for r in runs(repo) if r.info.run_id not in before]
    assert sorted(r.data.params["activation"] for r in new) == ["sigmoid", "tanh"]
    assert all(r.info.status == "FINISHED" and "test_accuracy" in r.data.metrics for r in new)
    names = [r.data.tags["dvc_exp_name"] for r in new]
    shown = sh(repo, "dvc", "exp", "show", "--csv", env=env).stdout
    for name, run in zip(names, new, strict=True):
        (row,) = [line.split(",") for line in shown.splitlines() if name in line.split(",")]
        assert run.data.params["activation"] in row
    # `dvc plots diff` overlays the two experiments' curves.
    diff = json.loads(sh(repo, "dvc", "plots", "diff", *names, "--json", env=env).stdout)["data"]
    (curves,) = [v for k, v in diff.items() if k.startswith("Accuracy per epoch")]
    revs = {p["rev"] for p in curves[0]["content"]["data"]["values"]}
    assert set(names) <= revs


def test_exp_run_on_another_dataset_downloads_it_and_reruns_every_stage(
    reproduced, env, fashion_dir: Path
) -> None:
    repo, _ = reproduced
    env = {**env, "FASHION_MNIST_MIRROR": str(fashion_dir)}
    before = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["preprocess"]["outs"]
    (mnist,) = [o for o in before if o["path"] == "data/prepared/mnist"]
    out = sh(
        repo, "dvc", "exp", "run", "-S", "data=fashion_mnist", "-S", "epochs=1", env=env
    ).stdout
    for stage in STAGES:
        assert f"Running stage '{stage}'" in out, out
    params = yaml.safe_load((repo / "params.yaml").read_text())
    assert params["data"]["name"] == params["tracking"]["experiment"] == "fashion_mnist"
    manifest = json.loads((repo / "data" / "raw" / "fashion_mnist" / "checksums.json").read_text())
    assert manifest["sha256"] == params["data"]["idx_sha256"]
    # MNIST's prepared data stays in DVC's cache, for `dvc exp apply` or `dvc checkout` back.
    md5 = mnist["md5"]
    assert (repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    metrics = json.loads((repo / "reports" / "metrics.json").read_text())
    assert 0.7 < metrics["test_accuracy"] < 0.9  # one epoch on clothes, not digits (0.96)
    c = client(repo)
    (run,) = c.search_runs([c.get_experiment_by_name("fashion_mnist").experiment_id])
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-9)
    assert run.data.tags["dvc_exp_name"] and run.info.status == "FINISHED"
