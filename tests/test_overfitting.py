"""Overfitting measured: label noise, the held-out set's best epoch, the training-set size,
and the study presets (conf/experiment/) composing into valid jobs."""

from __future__ import annotations

import csv
import tempfile

import numpy as np
import pytest
from conftest import config

from pipeline.callbacks import heldout_set, overfitting
from pipeline.config import CONF_DIR, compose, validate
from pipeline.data.noise import relabel
from pipeline.data.prepared import split_validation
from pipeline.errors import ConfigError, DataError
from pipeline.overrides import check_overrides
from pipeline.paths import Paths

PRESETS = ("epochs", "width", "data_size", "label_noise")


def one_hot(classes: np.ndarray, n: int = 10) -> np.ndarray:
    return np.eye(n, dtype=np.float32)[classes]


def test_label_noise_changes_exactly_that_fraction_to_other_classes() -> None:
    truth = np.random.default_rng(5).integers(0, 10, 10_000)
    labels = one_hot(truth)
    noisy, changed = relabel(labels, 0.2, seed=3)
    assert len(changed) == 2_000 and len(np.unique(changed)) == 2_000
    differs = noisy.argmax(axis=1) != truth
    assert differs.sum() == 2_000 and np.array_equal(np.flatnonzero(differs), changed)
    assert (noisy.sum(axis=1) == 1).all() and noisy.dtype == labels.dtype
    np.testing.assert_array_equal(labels, one_hot(truth))  # the input is left as it was
    # Each wrong class is about equally likely: shifts of 1..9 places, none of 0.
    shifts = (noisy.argmax(axis=1)[changed] - truth[changed]) % 10
    assert set(np.unique(shifts)) == set(range(1, 10))
    assert np.bincount(shifts, minlength=10)[1:].min() > 150  # 2,000 / 9 = 222 expected
    # The same seed gives the same labels; another seed others; 0 changes nothing.
    np.testing.assert_array_equal(relabel(labels, 0.2, seed=3)[0], noisy)
    assert not np.array_equal(relabel(labels, 0.2, seed=4)[1], changed)
    np.testing.assert_array_equal(relabel(labels, 0.0, seed=3)[0], labels)


def test_overfitting_finds_the_lowest_held_out_loss() -> None:
    history = {"test_loss": [0.5, 0.3, 0.2, 0.25, 0.4], "val_loss": [0.9, 0.8, 0.7, 0.6, 0.65]}
    result = overfitting(history, "test")
    assert result["best_epoch"] == 3 and result["epochs_past_best"] == 2
    assert result["heldout_loss_rise"] == pytest.approx(0.2)
    assert overfitting(history, "val") == pytest.approx(
        {"best_epoch": 4, "epochs_past_best": 1, "heldout_loss_rise": 0.05}
    )
    # Still falling at the end: the last epoch is the best, nothing rose.
    assert overfitting({"test_loss": [3.0, 2.0, 1.0]}, "test") == {
        "best_epoch": 3,
        "epochs_past_best": 0,
        "heldout_loss_rise": 0.0,
    }
    assert heldout_set(config("val_split=0.1")) == "val" and heldout_set(config()) == "test"


def test_fit_samples_takes_the_first_rows_left_after_the_validation_split() -> None:
    x, y = np.arange(100), np.arange(100) * 2
    x_fit, y_fit, x_val, y_val = split_validation(x, y, 0.2, 30)
    np.testing.assert_array_equal(x_fit, np.arange(30))
    np.testing.assert_array_equal(y_fit, np.arange(30) * 2)
    np.testing.assert_array_equal(x_val, np.arange(80, 100))  # not shrunk: the last 20%
    assert len(split_validation(x, y, 0.0, None)[0]) == 100
    with pytest.raises(ConfigError, match=r"data.fit_samples: invalid value 81; must be at most"):
        split_validation(x, y, 0.2, 81)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.label_noise=1.0", r"data.label_noise: invalid value 1.0; must be in \[0, 1\)"),
        ("data.label_noise=-0.1", r"data.label_noise: invalid value -0.1"),
        ("data.fit_samples=0", r"data.fit_samples: invalid value 0; must be null \(all\)"),
    ],
)
def test_bad_overfitting_settings_are_refused_in_one_line(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        validate(config(override))


@pytest.mark.parametrize("preset", PRESETS)
def test_each_study_preset_composes_into_valid_jobs_that_vary_its_x(preset: str) -> None:
    assert (CONF_DIR / "experiment" / f"{preset}.yaml").is_file()
    cfg = compose([f"+experiment={preset}"], hydra=True)
    params = dict(cfg.hydra.sweeper.params)
    assert cfg.study.name == preset
    assert cfg.tracking.experiment == f"mnist-study-{preset}"
    # Replicates: five seeds of every setting.
    assert params["seed"] == "0,1,2,3,4"
    if cfg.study.x == "epoch":  # one long training per seed, plotted per epoch
        assert set(params) == {"seed"} and cfg.epochs >= 20
    else:  # the study's x is the key its sweep varies, over at least 5 values
        assert set(params) == {"seed", cfg.study.x}
        assert len(params[cfg.study.x].split(",")) >= 5
        one = params[cfg.study.x].split(",")[0]
        job = validate(compose([f"+experiment={preset}", f"{cfg.study.x}={one}", "seed=0"]))
        assert str(job.study.x) == cfg.study.x
    # Every job of the preset's sweep is valid (as `python -m pipeline.train -m` checks).
    check_overrides(["-m", f"+experiment={preset}"])


def test_a_preset_sweep_value_that_is_bad_is_refused_before_any_job() -> None:
    with pytest.raises(ConfigError, match=r"model.hidden_units: invalid value \[0\]"):
        check_overrides(["-m", "+experiment=width", "model.hidden_units=[0],[64]"])
    # A command-line value replaces the preset's own sweep of that key.
    check_overrides(["-m", "+experiment=label_noise", "data.label_noise=0.1,0.3"])


def test_label_noise_run_fits_noisy_labels_and_scores_the_clean_ones(
    small_project, tmp_path
) -> None:
    from pipeline.evaluate import evaluate
    from pipeline.fit import fit
    from pipeline.predictions import load

    paths, _ = small_project
    overrides = ["data.train_samples=6000", "data.test_samples=2000", "epochs=2"]
    cfg = config(*overrides, "data.label_noise=0.5", "data.fit_samples=4000", "seed=7")
    run_paths = Paths(root=paths.root, out=tmp_path)
    history = fit(cfg, run_paths).history
    metrics = evaluate(cfg, run_paths)
    # Evaluate drew the same labels the training fitted on (same fraction, same seed): the
    # last epoch's score of the 4,000 fitted images on them is evaluate's train accuracy.
    assert history["train_accuracy"][-1] == pytest.approx(metrics["train_accuracy"], abs=1e-6)
    assert history["train_clean_accuracy"][-1] == pytest.approx(
        metrics["train_clean_accuracy"], abs=1e-6
    )
    # Half the labels are wrong: the network fits far less of them than of the truth. The
    # test labels are the true ones: with half of them wrong too, it could score at most
    # 0.5 + 0.5 / 9 = 0.56 against them.
    assert metrics["train_accuracy"] < 0.7 < metrics["train_clean_accuracy"]
    assert metrics["test_accuracy"] > 0.65
    assert len(load(run_paths.predictions)["train"]) == 4000
    # Evaluating with other noise (another seed) would score against other labels: refused.
    with pytest.raises(DataError, match=r"data.label_noise=0.5 \(seed 7\), not .*seed 8"):
        evaluate(
            config(*overrides, "data.label_noise=0.5", "data.fit_samples=4000", "seed=8"), run_paths
        )
    with pytest.raises(DataError, match="other train data .* data.fit_samples=3000"):
        evaluate(
            config(*overrides, "data.label_noise=0.5", "data.fit_samples=3000", "seed=7"), run_paths
        )


def _study(root, uri: str, preset: str) -> tuple[list, dict, list[dict]]:
    """The parent run and children of the last sweep of `preset`, and its study.csv."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"mnist-study-{preset}")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    assert {"compare/study.png", "compare/study.csv", "compare/table.csv"} <= logged
    with tempfile.TemporaryDirectory() as tmp:
        study = client.download_artifacts(parent.info.run_id, "compare/study.csv", tmp)
        with open(study, newline="") as f:
            return children, parent, list(csv.DictReader(f))


@pytest.mark.slow
def test_study_presets_run_as_one_command_with_a_study_plot_on_the_parent(
    make_project, tmp_path
) -> None:
    from conftest import OFFLINE, ROOT, python

    paths, _ = make_project("data.train_samples=1000", "data.test_samples=500")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    small = [
        *OFFLINE,
        "data.train_samples=1000",
        "data.test_samples=500",
        "model.hidden_units=[32]",
        "seed=0,1",
    ]
    # The training-set size study, cut down: two sizes, two seeds each.
    args = ["+experiment=data_size", "data.fit_samples=300,900", "epochs=3"]
    python(paths.root, "-m", "pipeline.train", "-m", *args, *small, env=env)
    children, parent, rows = _study(paths.root, env["MLFLOW_TRACKING_URI"], "data_size")
    assert parent.info.status == "FINISHED" and len(children) == 4
    assert [(float(r["x"]), int(r["n"])) for r in rows] == [(300, 2), (900, 2)]
    for row in rows:
        runs = [c for c in children if c.data.params["data.fit_samples"] == row["x"]]
        train = [c.data.metrics["train_accuracy"] for c in runs]
        assert float(row["train_accuracy_mean"]) == pytest.approx(np.mean(train), abs=1e-6)
        assert float(row["train_accuracy_std"]) == pytest.approx(np.std(train, ddof=1), abs=1e-6)
    assert all(
        c.data.tags["heldout"] == "test" and "best_epoch" in c.data.metrics for c in children
    )
    # The long-training study, per epoch: one configuration, its seeds' mean per epoch.
    python(
        paths.root, "-m", "pipeline.train", "-m", "+experiment=epochs", "epochs=3", *small, env=env
    )
    children, parent, rows = _study(paths.root, env["MLFLOW_TRACKING_URI"], "epochs")
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert [int(float(r["x"])) for r in rows] == [1, 2, 3] and {r["n"] for r in rows} == {"2"}
    assert {"test_loss_mean", "gap_mean"} <= set(rows[0])
    # benchmarks/studies.py reads the same sweeps back for the docs.
    out = tmp_path / "docs"
    script = str(ROOT / "benchmarks" / "studies.py")
    python(
        paths.root,
        script,
        "--report-only",
        "--only",
        "data_size",
        "--only",
        "epochs",
        "--out",
        str(out),
        env=env,
    )
    summary = (out / "summary.md").read_text()
    assert "| data.fit_samples=300 | 2 |" in summary and "| data.fit_samples=900 | 2 |" in summary
    assert "`python -m pipeline.train -m +experiment=epochs`: 2 runs in" in summary
    assert all((out / f"{name}.png").stat().st_size > 10_000 for name in ("data_size", "epochs"))
