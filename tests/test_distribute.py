"""One model on several devices: `train.distribute=mirrored` over 2 logical CPU devices, on real
MNIST, against the same training on one device."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import OFFLINE, config, python

from pipeline.config import compose, validate
from pipeline.errors import ConfigError, PipelineError
from pipeline.evaluate import evaluate
from pipeline.fit import fit
from pipeline.paths import Paths

SMALL = ["data.train_samples=6000", "data.test_samples=1000", "epochs=3"]
MIRRORED = ["train.distribute=mirrored", "train.cpu_devices=2"]
# Test accuracy of the single-device run of SMALL over seeds 0-4 was 0.907, 0.891, 0.861,
# 0.903, 0.910: a range of 0.049 (standard deviation 0.02). The mirrored run may differ from it
# by no more than that. It differs for a reason, too: with batch_size per replica, 2 replicas
# take half as many steps of twice the images (measured: 0.008 to 0.023 lower, seed for seed).
RUN_TO_RUN = 0.05
# The mirrored run against one device with the same global batch (256): the same steps on the
# same images, only summed in another order. Measured over seeds 0-4: at most 0.001 apart.
SAME_STEPS = 0.005


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.distribute=foo", "train.distribute: invalid value 'foo'; valid choices: none, "
                                 "mirrored"),
        ("train.cpu_devices=2", "train.cpu_devices: invalid value 2; must be 1 unless "
                                "train.distribute=mirrored"),
        ("train.distribute=mirrored train.cpu_devices=0", "train.cpu_devices: invalid value 0; "
                                                          "must be a positive integer"),
    ],
)  # fmt: skip
def test_bad_distribute_settings_are_refused_in_one_line(override: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(compose(override.split()))
    assert str(err.value) == expected


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices_trains_like_one_device(make_project, tmp_path: Path) -> None:
    import keras
    import mlflow

    paths, cfg = make_project(*SMALL)
    # Its own process: TensorFlow's devices are fixed when it starts.
    job = tmp_path / "mirrored"
    python(paths.root, "-m", "pipeline.train", *OFFLINE, *SMALL, *MIRRORED, f"hydra.run.dir={job}")
    mirrored = json.loads((job / "reports" / "metrics.json").read_text())
    run_id = json.loads((job / "models" / "run.json").read_text())["run_id"]
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["distribute.replicas"] == "2"
    assert run.data.params["distribute.global_batch_size"] == str(2 * cfg.batch_size)

    # Two replicas really trained: the weights had a copy on each of two CPU devices, ...
    devices = run.data.tags["distribute.devices"].split(",")
    assert [d.rsplit("/", 1)[1] for d in devices] == ["device:CPU:0", "device:CPU:1"]
    # ... TensorFlow all-reduced the gradients between both (its log, in the job's log file), ...
    assert "all_reduces, num_devices = 2" in (job / "train.log").read_text()
    # ... and each optimizer step took 2 x 128 images (one device at 128 takes 141 steps).
    model = keras.saving.load_model(job / "models" / "model.keras")
    assert int(model.optimizer.iterations) == 3 * math.ceil(6000 / 256) == 72
    # The per-epoch test scores, the model in MLflow's format: the run is complete.
    history = client.get_metric_history(run_id, "epoch/test_accuracy")
    assert [m.step for m in history] == [1, 2, 3]
    experiment = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert [m.name for m in models] == ["model"]

    def one_device(name: str, *overrides: str) -> dict:
        out = Paths(root=paths.root, out=tmp_path / name)
        cfg = config(*SMALL, *overrides)
        fit(cfg, out)
        return evaluate(cfg, out)

    same_steps = one_device("global-batch", "batch_size=256")
    assert mirrored["test_accuracy"] == pytest.approx(same_steps["test_accuracy"], abs=SAME_STEPS)
    assert mirrored["test_loss"] == pytest.approx(same_steps["test_loss"], abs=SAME_STEPS)
    single = one_device("single")
    assert mirrored["test_accuracy"] == pytest.approx(single["test_accuracy"], abs=RUN_TO_RUN)

    # In a process whose TensorFlow already started on one CPU device, it cannot be split.
    with pytest.raises(PipelineError, match=r"^train.cpu_devices=2: TensorFlow already runs "):
        fit(config(*SMALL, *MIRRORED), Paths(root=paths.root, out=tmp_path / "refused"))
