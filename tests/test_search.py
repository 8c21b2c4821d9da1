"""The hyperparameter search (`+search=mlp`, pipeline/search/): its space, its refusals, and
real searches on small data: trials chosen on validation, the winner tested once, a study that
continues and that two processes share, and the pruner stopping a hopeless trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import OFFLINE, ROOT, command_env, own_store, python

from pipeline.activations import TABLE
from pipeline.errors import ConfigError
from pipeline.overrides import check_overrides
from pipeline.search import space

SMALL = [
    *OFFLINE,
    "data.train_samples=2000",
    "data.test_samples=500",
    "epochs=2",
    "optimizer=adam",
    "batch_size=128",
]
TINY = ["model.hidden_units=choice([16],[32])", "activation=choice(relu,elu)"]


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("a=1,2,3", ("Categorical", (1, 2, 3))),
        ("a=choice(relu,elu)", ("Categorical", ("relu", "elu"))),
        ("a=choice([256],[256,256])", ("Categorical", ("[256]", "[256,256]"))),
        ("a=range(1,10,2)", ("Int", (1, 9, 2, False))),  # Hydra's range stops before 10
        ("a=range(0,1,0.25)", ("Float", (0.0, 0.75, 0.25, False))),
        ("a=interval(0,0.5)", ("Float", (0.0, 0.5, None, False))),
        ("a=int(interval(1,5))", ("Int", (1, 5, 1, False))),
        ("epochs=interval(1,5)", ("Int", (1, 5, 1, False))),  # the key holds an int
        ("a=tag(log, interval(1e-4, 1e-2))", ("Float", (1e-4, 1e-2, None, True))),
    ],
)
def test_every_sweep_form_becomes_its_optuna_distribution(override: str, expected) -> None:
    from pipeline.config import compose

    dists, fixed = space.build(space.parse([override]), compose())
    (dist,) = dists.values()
    kind, values = expected
    assert type(dist).__name__ == f"{kind}Distribution" and fixed == []
    if kind == "Categorical":
        assert dist.choices == values
    else:
        assert (dist.low, dist.high, dist.step, dist.log) == pytest.approx(values)


def test_the_command_line_fixes_or_replaces_the_presets_ranges() -> None:
    params = {"model.dropout": "interval(0,0.5)", "batch_size": "choice(64,128)"}
    dists, fixed = space.build(space.merged(params, ["model.dropout=0.2", "batch_size=32,64"]))
    assert fixed == ["model.dropout=0.2"]
    assert list(dists) == ["batch_size"] and dists["batch_size"].choices == (32, 64)


@pytest.mark.parametrize(
    "override", ["a=tag(log, interval(0, 1))", "a=interval(1, 1)", "a=shuffle(1,2)", "a=range(3,1)"]
)
def test_a_sweep_optuna_cannot_draw_from_is_one_line(override: str) -> None:
    with pytest.raises(ConfigError, match=r"^a=.*: "):
        space.build(space.parse([override]))


def test_drawn_values_go_back_as_hydra_overrides() -> None:
    assert space.override_text("model.hidden_units", "[256,256]") == "model.hidden_units=[256,256]"
    assert space.override_text("lr", 1e-05) == "lr=1e-05"
    assert space.override_text("model.batch_norm", True) == "model.batch_norm=true"


def test_the_mlp_preset_offers_every_activation_of_the_table() -> None:
    params = yaml.safe_load((ROOT / "conf" / "search" / "mlp.yaml").read_text())
    choices = params["hydra"]["sweeper"]["params"]["activation"]
    dists, _ = space.build(space.parse([f"activation={choices}"]))
    (dist,) = dists.values()
    assert list(dist.choices) == [a.name for a in TABLE]


@pytest.mark.parametrize("preset", ["mlp", "cnn"])
def test_the_presets_pass_the_pre_check_value_by_value(preset: str) -> None:
    check_overrides([f"+search={preset}"])
    with pytest.raises(ConfigError, match=r"^model\.dropout: invalid value 1\.0; must be in"):
        check_overrides([f"+search={preset}", "model.dropout=interval(0,1)"])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["search.objective=test_accuracy"], "search.objective: invalid value 'test_accuracy'; "
         "must be a validation metric (val_accuracy, val_loss)"),
        (["search.objective=train_loss"], "search.objective: invalid value 'train_loss'; "),
        (["val_split=0"], "val_split: invalid value 0.0; must be > 0 for a search"),
    ],
)  # fmt: skip
def test_a_search_that_would_choose_on_test_or_train_is_refused(args, expected) -> None:
    with pytest.raises(ConfigError) as err:
        check_overrides(["+search=mlp", *args])
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_the_objective_is_taken_at_the_epoch_of_lowest_validation_loss() -> None:
    from pipeline.search.pruning import objective

    history = {"val_loss": [0.5, 0.3, 0.4], "val_accuracy": [0.8, 0.9, 0.95]}
    assert objective(history, "val_accuracy") == 0.9  # not the last epoch's 0.95
    assert objective(history, "val_loss") == 0.3


def test_each_trial_draws_from_its_own_seed() -> None:
    import optuna

    from pipeline.search.study import trial_seeded

    def draws(trials: int) -> list[float]:
        sampler = trial_seeded(lambda s: optuna.samplers.RandomSampler(seed=s), 0)
        study = optuna.create_study(sampler=sampler)
        dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
        return [study.ask(dist).params["x"] for _ in range(trials)]

    first, again = draws(3), draws(4)
    assert first == again[:3]  # the same study draws the same values for the same trials
    assert len(set(again)) == 4  # and a continued study draws new ones, not trial 0's again


def test_the_final_line_says_what_the_interval_is() -> None:
    from pipeline.search.report import final_summary

    def run(val: float, test: float) -> SimpleNamespace:
        metrics = {"val_accuracy": val, "test_accuracy": test}
        return SimpleNamespace(
            info=SimpleNamespace(status="FINISHED"), data=SimpleNamespace(metrics=metrics)
        )

    metrics, line = final_summary([run(0.98, 0.97), run(0.99, 0.98), run(0.97, 0.96)])
    assert line == (
        "chosen on validation: val 0.9800 ± 0.0248; test, looked at once: 0.9700 ± 0.0248 "
        "(n=3; ± is the 95% interval's half-width)"
    )
    assert metrics["final_test_accuracy_mean"] == pytest.approx(0.97)
    half = metrics["final_test_accuracy_ci_high"] - metrics["final_test_accuracy_mean"]
    assert half == pytest.approx(0.0248, abs=1e-4)


# Real searches, on 2,000 training images for 2 epochs.


def _env(tmp_path: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": own_store(tmp_path)}


def _search(project: Path, tmp_path: Path, *args: str, check: bool = True):
    storage = f"search.storage=sqlite:///{tmp_path / 'optuna.db'}"
    return python(
        project, "-m", "pipeline.train", "+search=mlp", storage, *SMALL, *args,
        env=_env(tmp_path), check=check,
    )  # fmt: skip


def _runs(tmp_path: Path) -> tuple:
    import mlflow

    client = mlflow.MlflowClient(_env(tmp_path)["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    return client, sorted(runs, key=lambda r: r.info.start_time)


def _study(tmp_path: Path):
    import optuna

    return optuna.load_study(study_name="mlp-mnist", storage=f"sqlite:///{tmp_path / 'optuna.db'}")


@pytest.mark.slow
def test_a_search_chooses_on_validation_tests_its_winner_once_and_continues(
    make_project, tmp_path: Path
) -> None:
    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    result = _search(paths.root, tmp_path, "search.trials=3", "search.final_seeds=2", *TINY)
    client, runs = _runs(tmp_path)
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 1 + len(children) == 6
    assert parent.info.run_name == "search mlp-mnist, trials 0-2"
    assert parent.info.status == "FINISHED" and parent.data.tags["search.study"] == "mlp-mnist"
    assert parent.data.tags["search.states"] == "3 COMPLETE"

    # Three trials, scored on validation only: no test data in, no test score out.
    trials = [c for c in children if "search.trial" in c.data.tags]
    assert sorted(int(t.data.tags["search.trial"]) for t in trials) == [0, 1, 2]
    study = _study(tmp_path)
    for trial in trials:
        frozen = study.trials[int(trial.data.tags["search.trial"])]
        assert trial.info.status == "FINISHED" and trial.data.tags["search.state"] == "COMPLETE"
        assert trial.data.tags["search.epochs"] == "2"
        inputs = {d.dataset.name for d in trial.inputs.dataset_inputs}
        assert inputs == {"mnist-train", "mnist-validation"}
        assert not [k for k in trial.data.metrics if "test" in k]
        history = [
            m.value for m in client.get_metric_history(trial.info.run_id, "epoch/val_accuracy")
        ]
        assert frozen.value == history[int(trial.data.metrics["best_epoch"]) - 1]
        assert trial.data.params["activation"] == frozen.params["activation"]

    # The best trial's configuration, trained again with seeds 1 and 2, scored on test.
    best = study.best_trial
    finals = [c for c in children if c.data.tags.get("search.final") == "true"]
    assert sorted(f.data.params["seed"] for f in finals) == ["1", "2"]
    for final in finals:
        inputs = {d.dataset.name for d in final.inputs.dataset_inputs}
        assert inputs == {"mnist-train", "mnist-validation", "mnist-test"}
        assert 0.3 < final.data.metrics["test_accuracy"] <= 1
        assert final.data.params["model.hidden_units"] == best.params["model.hidden_units"]
        assert final.data.params["activation"] == best.params["activation"]
    tests = [f.data.metrics["test_accuracy"] for f in finals]
    m = parent.data.metrics
    assert m["best_value"] == pytest.approx(best.value)
    assert parent.data.params["best.activation"] == best.params["activation"]
    assert parent.data.params["best.trial"] == str(best.number)
    assert m["final_test_accuracy_mean"] == pytest.approx(sum(tests) / 2)
    assert (
        m["final_test_accuracy_ci_low"]
        < m["final_test_accuracy_mean"]
        < m["final_test_accuracy_ci_high"]
    )
    assert "final_val_accuracy_mean" in m
    assert f"test, looked at once: {m['final_test_accuracy_mean']:.4f} ± " in result.stdout
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "search")}
    assert {"search/trials.csv", "search/optimization_history.png"} <= artifacts
    assert "search/param_importances.png" in artifacts or "search.importances" in parent.data.tags

    # The same study again, one hopeless trial (learning rate 10): number 3, stopped by the
    # median of the earlier trials' first epochs (or failed, had it diverged to NaN).
    _search(paths.root, tmp_path, "search.trials=1", "search.final_seeds=0",
            "search.startup_trials=2", "optimizer.learning_rate=10", *TINY)  # fmt: skip
    study = _study(tmp_path)
    assert [t.number for t in study.trials] == [0, 1, 2, 3]
    assert study.trials[3].state.name in ("PRUNED", "FAIL")
    _, runs = _runs(tmp_path)
    (second,) = [r for r in runs if r.info.run_name == "search mlp-mnist, trials 3-3"]
    assert second.info.status == "FINISHED"
    (hopeless,) = [r for r in runs if r.data.tags.get("search.trial") == "3"]
    assert hopeless.data.tags["search.state"] == study.trials[3].state.name
    if study.trials[3].state.name == "PRUNED":
        assert hopeless.info.status == "FINISHED" and hopeless.data.tags["search.epochs"] == "1"
    ranked = python(paths.root, "-m", "pipeline.compare", "--search", "mlp-mnist", "--storage",
                    f"sqlite:///{tmp_path / 'optuna.db'}", env=_env(tmp_path)).stdout  # fmt: skip
    lines = ranked.splitlines()
    assert lines[2].split()[:2] == [str(best.number), "COMPLETE"]  # the best first
    assert "final runs: chosen on validation: val " in ranked


@pytest.mark.slow
def test_two_processes_share_one_study_and_joblib_runs_two_trials_at_a_time(
    make_project, tmp_path: Path
) -> None:
    import json

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    storage = f"search.storage=sqlite:///{tmp_path / 'optuna.db'}"
    args = ["+search=mlp", storage, *SMALL, *TINY, "search.trials=2", "search.final_seeds=0"]
    env = command_env(own_store(tmp_path))
    # The first process runs its trials two at a time in joblib's worker processes.
    launchers = {
        "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        "basic": [],
    }
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "pipeline.train", *args, *launcher,
             f"hydra.sweep.dir={tmp_path / name}"],
            cwd=paths.root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for name, launcher in launchers.items()
    }  # fmt: skip
    for proc in procs.values():
        _, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
    study = _study(tmp_path)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    _, runs = _runs(tmp_path)
    numbers = [r.data.tags["search.trial"] for r in runs if "search.trial" in r.data.tags]
    assert sorted(numbers) == ["0", "1", "2", "3"]  # one run per trial, none twice
    params = {tuple(sorted(t.params.items())) for t in study.trials}
    assert len(params) == 4  # each trial drew values of its own
    # joblib's trials ran in two processes other than the search's, at the same time.
    jobs = [json.loads(p.read_text()) for p in (tmp_path / "joblib").glob("[0-9]*/job.json")]
    pids = {job["pid"] for job in jobs}
    assert len(jobs) == 2 and len(pids) == 2 and procs["joblib"].pid not in pids
    (parent,) = [r for r in runs if r.data.tags.get("sweep_dir") == str(tmp_path / "joblib")]
    first, second = [
        r.info for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    assert first.start_time < second.end_time and second.start_time < first.end_time


# No training: refused by the pre-check, in well under a second each.
@pytest.mark.parametrize(
    "args",
    [
        ["search.objective=test_accuracy"],
        ["search.objective=train_accuracy"],
        ["val_split=0"],
        # A password in the URL would be recorded with the runs (and said in the error).
        ["search.storage='postgresql+psycopg://mlflow:s3cret@127.0.0.1:5432/optuna'"],
    ],
)
def test_a_refused_search_leaves_nothing_behind(tmp_path: Path, args: list[str]) -> None:
    result = _search(tmp_path, tmp_path, *args, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "s3cret" not in result.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()
    assert not (tmp_path / "multirun").exists()
