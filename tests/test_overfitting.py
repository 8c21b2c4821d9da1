"""Overfitting measured: label noise, the held-out set's best epoch, the training-set size,
and the study presets (conf/experiment/) composing into valid jobs."""

from __future__ import annotations

import csv
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE, ROOT, config, own_store, python

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


def test_the_selection_preset_composes_into_valid_jobs_scored_on_validation() -> None:
    cfg = compose(["+experiment=selection"], hydra=True)
    params = dict(cfg.hydra.sweeper.params)
    assert cfg.study.name == "selection" and cfg.study.x is None
    assert cfg.tracking.experiment == "mnist-study-selection" and cfg.val_split == 0.1
    # One run per configuration, 20 to 30 of them.
    assert "seed" not in params
    assert 20 <= math.prod(len(v.split(",")) for v in params.values()) <= 30
    check_overrides(["-m", "+experiment=selection"])
    # It picks on validation too: without validation rows it is refused, in one line.
    with pytest.raises(ConfigError, match=r"^val_split: invalid value 0.0; must be > 0 for the"):
        check_overrides(["-m", "+experiment=selection", "val_split=0"])


def test_the_halves_and_the_two_picks_on_known_scores() -> None:
    from pipeline.predictions import half_accuracies, test_halves
    from pipeline.selection import measure

    a, b = test_halves(7)
    assert a.tolist() == [0, 2, 4, 6] and b.tolist() == [1, 3, 5]
    probs, targets = one_hot(np.array([1, 1, 2, 2])), one_hot(np.array([1, 0, 2, 2]))
    assert half_accuracies(probs, targets) == {"test_a_accuracy": 1.0, "test_b_accuracy": 0.5}
    # Three configurations on 1,000 images. 0: right on 90% of half A, 50% of half B;
    # 1: the best on validation, 80% on each half; 2: worse on both.
    pattern = np.arange(500)
    lucky, steady, poor = np.zeros(1000), np.zeros(1000), np.zeros(1000)
    lucky[0::2], lucky[1::2] = pattern % 10 > 0, pattern % 2 > 0
    steady[0::2], steady[1::2] = pattern % 5 > 0, pattern % 5 > 0
    poor[0::2], poor[1::2] = pattern % 2 > 0, pattern % 4 > 0
    configs = [
        {"config": name, "n": 1, "val": val, "correct": correct}
        for name, val, correct in [
            ("lucky", 0.7, lucky),
            ("steady", 0.9, steady),
            ("poor", 0.5, poor),
        ]
    ]
    m = measure(configs, splits=20)
    assert (m["by_test"], m["by_val"]) == (0, 1)
    assert (m["a"][0], m["b"][0], m["a"][1], m["b"][1]) == (0.9, 0.5, 0.8, 0.8)
    optimism, control = m["welch"]
    assert optimism.diff == pytest.approx(0.4) and optimism.ci_low > 0.3 and optimism.p < 1e-6
    assert control.diff == 0 and control.p == pytest.approx(1.0)
    # Ten equally good configurations: the winner on a random half A owes its lead there to
    # luck, and scores less on the other half; the validation winner leans neither way.
    rng = np.random.default_rng(1)
    equal = [{"config": i, "n": 1, "val": rng.random(), "correct": rng.random(1000) < 0.9}
             for i in range(10)]  # fmt: skip
    repeated = measure(equal, splits=300)["repeated"]
    assert repeated[:, 0].mean() > 0.01 and abs(repeated[:, 1].mean()) < 0.004


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


def _study(root, uri: str, preset: str, table: str = "study") -> tuple[list, dict, list[dict]]:
    """The parent run and children of the last sweep of `preset`, and its `table`.csv (with
    the plot of a study)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(f"mnist-study-{preset}")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "compare")}
    plot = {"compare/study.png"} if table == "study" else {"compare/selection.md"}
    assert {*plot, f"compare/{table}.csv", "compare/table.csv"} <= logged
    with tempfile.TemporaryDirectory() as tmp:
        study = client.download_artifacts(parent.info.run_id, f"compare/{table}.csv", tmp)
        with open(study, newline="") as f:
            return children, parent, list(csv.DictReader(f))


@pytest.mark.slow
def test_study_presets_run_as_one_command_with_a_study_plot_on_the_parent(
    make_project, tmp_path
) -> None:

    paths, _ = make_project("data.train_samples=1000", "data.test_samples=500")
    env = {"MLFLOW_TRACKING_URI": own_store(tmp_path)}
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


@pytest.mark.slow
def test_the_selection_study_picks_on_test_and_on_validation_and_scores_both_on_half_b(
    make_project, tmp_path
) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    env = {"MLFLOW_TRACKING_URI": own_store(tmp_path)}
    # Cut down: four configurations, one epoch on 2,000 images (200 of them validation).
    args = [*OFFLINE, "+experiment=selection", "data.train_samples=2000", "epochs=1",
            "data.test_samples=500", "model.hidden_units=[16],[64]", "activation=relu,tanh",
            "optimizer.learning_rate=0.001", "model.dropout=0.0"]  # fmt: skip
    result = python(paths.root, "-m", "pipeline.train", "-m", *args, env=env)
    children, parent, rows = _study(
        paths.root, env["MLFLOW_TRACKING_URI"], "selection", "selection"
    )
    assert parent.info.status == "FINISHED" and len(children) == 4
    scores = {
        " ".join(f"{k}={c.data.params[k]}" for k in ("activation", "model.hidden_units")): (
            c.data.metrics["val_accuracy"],
            c.data.metrics["test_a_accuracy"],
            c.data.metrics["test_b_accuracy"],
        )
        for c in children
    }
    for val, a, b in scores.values():  # 250 test images a half; their mean is the whole's
        assert (a * 250) == pytest.approx(round(a * 250)) and min(val, a, b) > 0.3
    m, tags = parent.data.metrics, parent.data.tags
    # The best on half A, and the best on validation (of equals, either).
    by_test, by_val = tags["selection.test_pick"], tags["selection.val_pick"]
    assert scores[by_test][1] == max(a for _, a, _ in scores.values())
    assert scores[by_val][0] == max(val for val, _, _ in scores.values())
    assert m["test_pick_test_a_accuracy"] == pytest.approx(scores[by_test][1], abs=1e-6)
    assert m["test_pick_test_b_accuracy"] == pytest.approx(scores[by_test][2], abs=1e-6)
    assert m["val_pick_val_accuracy"] == pytest.approx(scores[by_val][0], abs=1e-6)
    assert m["val_pick_test_b_accuracy"] == pytest.approx(scores[by_val][2], abs=1e-6)
    optimism = scores[by_test][1] - scores[by_test][2]
    assert m["optimism"] == pytest.approx(optimism, abs=1e-6)
    assert (
        m["optimism_ci_low"] < m["optimism"] < m["optimism_ci_high"] and 0 <= m["optimism_p"] <= 1
    )
    assert m["optimism_repeated_low"] <= m["optimism_repeated_mean"] <= m["optimism_repeated_high"]
    picked = {r["picked_by"]: r["config"] for r in rows if r["picked_by"]}
    assert len(rows) == 4 and picked in (
        {"both": by_test},
        {"test half A": by_test, "validation": by_val},
    )
    # The report in plain words, printed and on the parent run.
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    text = Path(client.download_artifacts(parent.info.run_id, "compare/selection.md", tmp_path))
    report = text.read_text()
    assert f"- Chosen on test half A, as a user with val_split=0 would: {by_test}." in report
    same = "the same configuration" if by_val == by_test else by_val
    assert f"- Chosen on validation: {same} (validation " in report
    assert f"an optimism of {optimism * 100:+.2f}% (95% interval " in report
    assert "Welch's t-test over its 250 + 250 images" in report
    assert "- The selection repeated over 1,000 random splits" in result.stdout
    # benchmarks/studies.py copies the parent's report into the docs.
    out = tmp_path / "docs"
    script = str(ROOT / "benchmarks" / "studies.py")
    python(paths.root, script, "--report-only", "--only", "selection", "--out", str(out), env=env)
    summary = (out / "summary.md").read_text()
    assert "`python -m pipeline.train -m +experiment=selection`: 4 runs in" in summary
    assert report.split("\n", 1)[1] in summary
    assert (out / "selection.csv").read_text().startswith("config,n,val_accuracy,test_a_accuracy")
