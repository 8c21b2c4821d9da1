"""GPU installs: the `gpu` extra (TensorFlow's CUDA libraries, the same TensorFlow), `make
run GPU=1`, and a job that SLURM gave GPUs which TensorFlow cannot see saying so in one line
and a tag rather than training on the CPU without a word. No GPU is needed for any of it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import ROOT

from pipeline.outputs import gpus_asked
from pipeline.paths import Paths

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def _requirement(name: str, requirements: list[str]) -> str:
    (found,) = [r for r in requirements if r.split("[")[0].split(">")[0].split("=")[0] == name]
    return found


def test_the_gpu_extra_is_tensorflow_with_cuda_at_the_same_versions() -> None:
    tensorflow = _requirement("tensorflow", PYPROJECT["project"]["dependencies"])
    gpu = PYPROJECT["project"]["optional-dependencies"]["gpu"]
    assert gpu == [tensorflow.replace("tensorflow", "tensorflow[and-cuda]", 1)]


def test_the_auth_extra_is_in_dev_so_the_tests_can_run_its_server() -> None:
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert extras["auth"] == ["mlflow[auth]>=3.17,<4"]
    assert "mnist-pipeline[auth]" in extras["dev"]


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this machine")
def test_make_gpu_1_installs_the_gpu_extra_and_switching_it_on_installs_again(
    tmp_path: Path,
) -> None:
    for name in ("Makefile", "pyproject.toml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / ".installed").touch()  # installed without GPU=1, up to date

    def dry_run(*args: str) -> str:
        return subprocess.run(["make", "-n", "run", *args], cwd=tmp_path, capture_output=True,
                              text=True, check=True).stdout  # fmt: skip

    assert "pip install" not in dry_run()
    assert '-e ".[dev,gpu]"' in dry_run("GPU=1")
    (tmp_path / ".venv" / ".installed-gpu").touch()
    assert "pip install" not in dry_run("GPU=1")


@pytest.mark.parametrize(
    ("environ", "asked"),
    [
        ({}, None),
        ({"SLURM_JOB_ID": "17"}, None),  # a job without GPUs
        ({"SLURM_GPUS_ON_NODE": "0"}, None),
        ({"SLURM_GPUS_PER_NODE": "a100:0"}, None),
        ({"SLURM_GPUS_ON_NODE": "1"}, "SLURM_GPUS_ON_NODE=1"),
        ({"SLURM_GPUS_PER_NODE": "gpu:2"}, "SLURM_GPUS_PER_NODE=gpu:2"),
        ({"SLURM_JOB_GPUS": "0,1"}, "SLURM_JOB_GPUS=0,1"),
    ],
)
def test_a_job_given_gpus_is_told_from_slurms_variables(environ: dict, asked: str | None) -> None:
    assert gpus_asked(environ) == asked


@pytest.mark.slow
def test_a_job_given_gpus_that_tensorflow_cannot_see_says_so_in_one_line_and_a_tag(
    small_project, capfd: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    from pipeline.fit import fit

    paths, cfg = small_project
    monkeypatch.setenv("SLURM_GPUS_ON_NODE", "1")  # as SLURM sets it for --gpus-per-node=1
    result = fit(cfg, Paths(root=paths.root, out=paths.root / "outputs" / "gpu"))
    said = [line for line in capfd.readouterr().err.splitlines() if "TensorFlow sees" in line]
    line = (
        "SLURM gave this job GPUs (SLURM_GPUS_ON_NODE=1) but TensorFlow sees none: training "
        'on the CPU (install the gpu extra: pip install -e ".[gpu]")'
    )
    assert said == [f"warning: {line}"]
    tags = mlflow.MlflowClient().get_run(result.run_id).data.tags
    assert (tags["devices"], tags["device_warning"]) == ("CPU:0", line)


@pytest.mark.slow  # asks PyPI; the resolution alone, no download of the wheels
def test_the_gpu_extra_resolves_to_nvidias_cuda_wheels(tmp_path: Path) -> None:
    import tensorflow as tf

    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--dry-run", "--ignore-installed",
         "--report", str(report), f"tensorflow[and-cuda]=={tf.__version__}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    names = {item["metadata"]["name"] for item in json.loads(report.read_text())["install"]}
    cuda = {"nvidia-cudnn-cu12", "nvidia-cublas-cu12", "nvidia-cuda-runtime-cu12",
            "nvidia-cuda-nvcc-cu12", "nvidia-cufft-cu12", "nvidia-nccl-cu12"}  # fmt: skip
    assert cuda <= names, sorted(names)
    assert "tensorflow" in names
