"""Comparing runs: sweeps grouped under a parent run, the comparison report, and the runs as
`mlflow server` serves them to the UI. The slow tests' store is filled by a real 3-job sweep;
the fast ones group hand-made rows, or runs logged straight to the session's store."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import OFFLINE, mlflow_server, own_store, python

from pipeline import compare, study

SWEEP = ["activation=relu,tanh,elu"]
SMALL = [
    *OFFLINE,
    "epochs=2",
    "data.train_samples=3000",
    "data.test_samples=1000",
    "model.hidden_units=[64]",
]


def run(cwd: Path, env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return python(cwd, *args, env=env, check=check)


@pytest.fixture(scope="module")
def store(make_project, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A fresh tracking store holding one 3-job sweep, run through the real CLI."""
    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}"
    env = {"MLFLOW_TRACKING_URI": uri}
    run(paths.root, env, "-m", "pipeline.train", "-m", *SWEEP, *SMALL)
    return {"root": paths.root, "uri": uri, "env": env}


def client(store: dict):
    import mlflow

    return mlflow.MlflowClient(tracking_uri=store["uri"])


def sweep_runs(store: dict) -> tuple:
    c = client(store)
    runs = c.search_runs([c.get_experiment_by_name("mnist").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


@pytest.mark.slow
def test_sweep_is_one_parent_with_a_child_per_job(store: dict) -> None:
    parent, children = sweep_runs(store)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["jobs"] == "3 of 3 finished"
    assert sorted(c.data.params["activation"] for c in children) == ["elu", "relu", "tanh"]
    assert sorted(c.data.tags["sweep_job"] for c in children) == ["0", "1", "2"]
    assert all(c.info.status == "FINISHED" for c in children)
    artifacts = {a.path for a in client(store).list_artifacts(parent.info.run_id, "compare")}
    assert artifacts == {
        f"compare/{n}" for n in ("table.md", "table.csv", "accuracy.png", "curves.png")
    }


@pytest.mark.slow
def test_report_orders_runs_and_computes_gaps(store: dict, tmp_path: Path) -> None:
    parent, children = sweep_runs(store)
    out = tmp_path / "report"
    result = run(
        store["root"],
        store["env"],
        "-m",
        "pipeline.compare",
        "--per-run",
        "--parent",
        parent.info.run_id,
        "--out",
        str(out),
    )
    with open(out / "table.csv") as f:
        rows = list(csv.DictReader(f))
    by_id = {c.info.run_id: c for c in children}
    assert sorted(r["run_id"] for r in rows) == sorted(by_id)
    tests = [float(r["test_accuracy"]) for r in rows]
    assert tests == sorted(tests, reverse=True)
    for row in rows:
        metrics = by_id[row["run_id"]].data.metrics
        assert float(row["test_accuracy"]) == pytest.approx(metrics["test_accuracy"])
        assert float(row["gap"]) == pytest.approx(
            metrics["train_accuracy"] - metrics["test_accuracy"], abs=1e-6
        )
        assert row["model"] == "mlp" and row["epochs"] == "2" and float(row["duration_s"]) > 0
    printed = result.stdout.splitlines()
    assert printed[0].split()[:4] == ["run", "data", "model", "activation"]
    assert [line.split()[0] for line in printed[1:4]] == [r["run"] for r in rows]
    for name in ("accuracy.png", "curves.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000, name
    assert (out / "table.md").read_text().count("| mlp-") == 3


@pytest.mark.slow
def test_report_filter_and_top(store: dict, tmp_path: Path) -> None:
    result = run(
        store["root"],
        store["env"],
        "-m",
        "pipeline.compare",
        "--per-run",
        "--filter",
        "params.activation = 'tanh'",
        "--out",
        str(tmp_path),
    )
    assert [line.split()[3] for line in result.stdout.splitlines()[1:2]] == ["tanh"]
    assert (tmp_path / "table.csv").read_text().count("\n") == 1 + 1
    result = run(
        store["root"], store["env"], "-m", "pipeline.compare", "--top", "2", "--out", str(tmp_path)
    )
    assert (tmp_path / "table.csv").read_text().count("\n") == 1 + 2


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--filter", "params.activation = 'mish'"],
            "no evaluated runs in experiment 'mnist' matching params.activation = 'mish'",
        ),
        (["--experiment", "nope"], "no experiment 'nope' in sqlite:///"),
    ],
)
def test_report_with_nothing_to_compare_says_so(
    store: dict, tmp_path: Path, args: list[str], message: str
) -> None:
    result = run(
        store["root"],
        store["env"],
        "-m",
        "pipeline.compare",
        *args,
        "--out",
        str(tmp_path / "out"),
        check=False,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"error: {message}")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_report_groups_the_sweep_by_configuration(store: dict, tmp_path: Path) -> None:
    # Three activations, one seed each: three configurations of one run, none comparable.
    parent, children = sweep_runs(store)
    result = run(
        store["root"],
        store["env"],
        "-m",
        "pipeline.compare",
        "--parent",
        parent.info.run_id,
        "--out",
        str(tmp_path),
    )
    with open(tmp_path / "table.csv") as f:
        rows = list(csv.DictReader(f))
    # elu's own argument is a param that only it has.
    assert sorted(r["config"] for r in rows) == [
        "activation=elu activation_args.alpha=1.0",
        "activation=relu",
        "activation=tanh",
    ]
    assert [r["vs_best"] for r in rows] == ["best", "n<2", "n<2"]
    for row in rows:
        (child,) = [c for c in children if c.info.run_id == row["run_ids"]]
        assert (row["n"], row["seeds"], row["test_accuracy_std"]) == ("1", "0", "")
        assert float(row["test_accuracy_mean"]) == pytest.approx(
            child.data.metrics["test_accuracy"]
        )
    # No run has a validation score: no such column, and the rest as SHOWN says.
    shown = " ".join(h for h in compare.SHOWN if h != "val")
    assert result.stdout.splitlines()[0].split() == shown.split()
    assert "ranked on the test set: the best's test score is optimistic" in result.stdout


def row(
    activation: str,
    seed: int,
    train: float,
    test: float,
    units: str = "[512]",
    val: float = math.nan,
) -> dict:
    """A run as `compare.rows_of` gives it."""
    params = {"activation": activation, "model.hidden_units": units, "seed": str(seed)}
    return {
        "run": f"mlp-{activation}",
        "data": "mnist",
        "model": "mlp",
        "activation": activation,
        "optimizer": "rmsprop",
        "epochs": "5",
        "batch_size": "128",
        "train_accuracy": train,
        "val_accuracy": val,
        "test_accuracy": test,
        "gap": train - test,
        "duration_s": 1.0,
        "run_id": f"{activation}-{seed}",
        "seed": str(seed),
        "params": params,
    }


# Best elu; sigmoid 0.01 below it (Welch p 0.29: a tie); relu far below; tanh ran once.
ROWS = [
    row("elu", 2, 0.995, 0.99),
    row("elu", 0, 0.99, 0.97),
    row("elu", 1, 1.0, 0.98),
    row("relu", 0, 0.93, 0.90, "[64]"),
    row("relu", 1, 0.93, 0.905, "[64]"),
    row("relu", 2, 0.93, 0.91, "[64]"),
    row("sigmoid", 0, 0.99, 0.96),
    row("sigmoid", 1, 0.99, 0.97),
    row("sigmoid", 2, 0.99, 0.98),
    row("tanh", 0, 0.99, 0.95),
]


def test_seeds_of_one_configuration_are_one_group() -> None:
    groups = compare.group_rows(ROWS)
    assert [g["config"] for g in groups] == [
        "activation=elu model.hidden_units=[512]",
        "activation=sigmoid model.hidden_units=[512]",
        "activation=tanh model.hidden_units=[512]",
        "activation=relu model.hidden_units=[64]",
    ]
    assert [g["vs_best"] for g in groups] == ["best", "tie", "n<2", "worse"]
    assert [g["ranked_on"] for g in groups] == ["test_accuracy"] * 4
    assert [(g["n"], g["seeds"]) for g in groups] == [(3, "0,1,2")] * 2 + [(1, "0"), (3, "0,1,2")]
    elu, _, tanh, relu = groups
    half = 4.303 * 0.01 / math.sqrt(3)  # the t table's value for 2 degrees of freedom
    assert (elu["test_accuracy_mean"], elu["test_accuracy_std"]) == (
        pytest.approx(0.98),
        pytest.approx(0.01),
    )
    assert elu["test_accuracy_ci_low"] == pytest.approx(0.98 - half, abs=1e-5)
    assert elu["test_accuracy_ci_high"] == pytest.approx(0.98 + half, abs=1e-5)
    assert (elu["train_accuracy_mean"], elu["train_accuracy_std"]) == (
        pytest.approx(0.995),
        pytest.approx(0.005),
    )
    # Gaps 0.005, 0.02, 0.02.
    assert (elu["gap_mean"], elu["gap_std"]) == (
        pytest.approx(0.015),
        pytest.approx(math.sqrt(7.5e-5)),
    )
    assert relu["test_accuracy_mean"] == pytest.approx(0.905) and relu["gap_mean"] == pytest.approx(
        0.025
    )
    assert tanh["test_accuracy_mean"] == 0.95 and math.isnan(tanh["test_accuracy_std"])
    assert math.isnan(tanh["test_accuracy_ci_low"])
    assert elu["run_ids"] == ["elu-2", "elu-0", "elu-1"] and elu["activation"] == "elu"
    # Nothing varies: the run's name.
    assert [g["config"] for g in compare.group_rows(ROWS[:3])] == ["mlp-elu"]
    # A param only one configuration has names it there alone.
    tanh = {**ROWS[9], "params": {**ROWS[9]["params"], "activation_args.alpha": "1.0"}}
    labels = [g["config"] for g in compare.group_rows([*ROWS[:3], tanh])]
    assert labels == ["activation=elu", "activation=tanh activation_args.alpha=1.0"]


def test_groups_print_mean_and_std_and_a_single_run_without_spread() -> None:
    lines = compare.group_text_table(compare.group_rows(ROWS)).splitlines()
    assert lines[0].split()[:4] == ["config", "n", "train", "test"]
    elu, tanh = lines[1].split(), lines[3].split()
    assert elu[2:13] == [
        "3",
        "0.9950",
        "±",
        "0.0050",
        "0.9800",
        "±",
        "0.0100",
        "[0.9552,",
        "1.0048]",
        "0.0150",
        "±",
    ]
    assert elu[-4:] == ["+0.0000", "-", "best", "-"]
    assert tanh[2:] == [
        "1",
        "0.9900",
        "±",
        "-",
        "0.9500",
        "±",
        "-",
        "-",
        "0.0400",
        "±",
        "-",
        "+0.0300",
        "-",
        "n<2",
        "-",
    ]
    sigmoid, relu = lines[2].split(), lines[4].split()
    assert sigmoid[-6:] == ["+0.0100", "[-0.0127,", "+0.0327]", "0.288", "tie", "17"]
    assert relu[-3:] == ["0.003", "worse", "-"]


# Five seeds each, the same spread (std 0.00158): on validation A is best, B 0.001 below it
# (Welch t = 1.0 on 8 degrees of freedom: p 0.347), C 0.02 below. On the test set B is 0.001
# above A: ranking on validation must not look at it.
SPREAD = (0.0, 0.002, -0.002, 0.001, -0.001)
KNOWN = [
    row(name, seed, 0.99, test + d, val=val + d)
    for name, val, test in (("a", 0.985, 0.979), ("b", 0.984, 0.980), ("c", 0.965, 0.959))
    for seed, d in enumerate(SPREAD)
]


def test_group_rows_tests_each_configuration_against_the_best_on_validation() -> None:
    from pipeline import stats

    a, b, c = compare.group_rows(KNOWN)
    assert [g["activation"] for g in (a, b, c)] == ["a", "b", "c"]
    assert {g["ranked_on"] for g in (a, b, c)} == {"val_accuracy"}
    assert b["test_accuracy_mean"] > a["test_accuracy_mean"]  # reported beside, not ranked on
    assert [g["vs_best"] for g in (a, b, c)] == ["best", "tie", "worse"]
    assert a["diff_vs_best"] == 0 and math.isnan(a["p_value"]) and math.isnan(a["seeds_needed"])
    assert b["diff_vs_best"] == pytest.approx(0.001)
    # t = 1 on 8 degrees of freedom: two-sided p 0.3466 (t tables); Holm keeps the larger p
    # of the two as it is, and doubles C's.
    assert b["p_value"] == pytest.approx(0.3466, abs=1e-4) and b["p_holm"] == b["p_value"]
    assert c["p_holm"] == pytest.approx(2 * c["p_value"]) and c["p_holm"] < 1e-6
    half = 2.306 * 0.001  # t(0.975, 8) from the tables times the difference's standard error
    assert b["diff_ci_low"] == pytest.approx(0.001 - half, abs=1e-5)
    assert b["diff_ci_high"] == pytest.approx(0.001 + half, abs=1e-5)
    # d = 0.001 / 0.00158 = 0.63: Cohen's table gives 45 a side for d = 0.6 and 33 for 0.7.
    assert 33 < b["seeds_needed"] < 45
    assert b["seeds_needed"] == stats.seeds_needed(0.001, b["val_accuracy_std"])
    assert math.isnan(c["seeds_needed"])  # worse: nothing to plan
    rule = compare.rule([a, b, c])
    assert rule.startswith("Configurations ranked on validation.")
    assert "Holm-adjusted over 2 comparisons" in rule
    assert "With 5 seeds per configuration, differences below 0.32% are not detectable" in rule
    # One run without a validation score: all are ranked on the test set, and B is best.
    groups = compare.group_rows([*KNOWN[:-1], {**KNOWN[-1], "val_accuracy": math.nan}])
    assert [g["activation"] for g in groups] == ["b", "a", "c"]
    assert "ranked on the test set: the best's test score is optimistic" in compare.rule(groups)


def test_planning_seeds_per_configuration() -> None:
    lines = compare.plan_seeds(compare.group_rows([*KNOWN, *ROWS[9:]]), 0.001)
    assert len(lines) == 3  # tanh ran once: no std to plan from
    # tanh has no validation score: ranked on the test set, where b is best.
    assert lines[0].startswith("activation=b: 41 seeds per configuration to detect 0.10% ")
    with pytest.raises(compare.NoRunsError, match="no configuration has 2 runs or more"):
        compare.plan_seeds(compare.group_rows(ROWS[9:]), 0.001)


# A study against a param reads no store (only one against the epoch reads runs' curves).
NO_STORE = "sqlite:///no-store-read.db"


def test_study_takes_its_x_from_the_swept_param(tmp_path: Path) -> None:
    groups = compare.group_rows([r for r in ROWS if r["activation"] in ("elu", "relu")])
    paths = study.study_report(NO_STORE, groups, "model.hidden_units", tmp_path, "units")
    assert paths == [tmp_path / "study.png", tmp_path / "study.csv"]
    with open(tmp_path / "study.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["x"], r["n"]) for r in rows] == [("64", "3"), ("512", "3")]
    assert float(rows[1]["test_accuracy_mean"]) == pytest.approx(0.98)
    assert list(rows[0])[:4] == ["x", "n", "train_accuracy_mean", "train_accuracy_std"]
    with pytest.raises(ValueError, match="x 'units' is not a param of the runs; valid: epoch, "):
        study.study_report(NO_STORE, groups, "units", tmp_path, "units")


def test_a_label_noise_study_shows_train_accuracy_on_the_true_labels_too(tmp_path: Path) -> None:
    def noisy(noise: str, seed: int, train: float, clean: float) -> dict:
        r = row("relu", seed, train, 0.9)
        return {
            **r,
            "train_clean_accuracy": clean,
            "params": {**r["params"], "data.label_noise": noise},
        }

    runs = [
        noisy("0.0", 0, 0.99, 0.99),
        noisy("0.0", 1, 0.97, 0.97),
        noisy("0.4", 0, 0.7, 0.9),
        noisy("0.4", 1, 0.8, 0.92),
    ]
    study.study_report(NO_STORE, compare.group_rows(runs), "data.label_noise", tmp_path, "noise")
    with open(tmp_path / "study.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["x"]) for r in rows] == [0.0, 0.4]
    assert float(rows[1]["train_clean_accuracy_mean"]) == pytest.approx(0.91)
    assert float(rows[1]["train_clean_accuracy_std"]) == pytest.approx(math.sqrt(2e-4))
    assert float(rows[1]["train_accuracy_mean"]) == pytest.approx(0.75)
    # Runs without label noise have no such column.
    groups = compare.group_rows(ROWS[:6])
    study.study_report(NO_STORE, groups, "model.hidden_units", tmp_path, "units")
    assert "train_clean_accuracy_mean" not in (tmp_path / "study.csv").read_text()


@pytest.fixture(scope="module")
def seeds(tracking_store: str) -> str:
    """An experiment in the session's store: elu and relu, two seeds each, and one tanh run,
    each with 3 epochs of curves (one elu run stopped after 2). Logged straight to the store."""
    import mlflow
    from mlflow.entities import Metric, Param

    client = mlflow.MlflowClient(tracking_store)
    name = f"seeds-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(name)
    for r in [*ROWS[:2], *ROWS[3:5], ROWS[9]]:
        run_id = client.create_run(experiment, run_name=r["run"]).info.run_id
        epochs = 2 if r["run_id"] == "elu-0" else 3
        curves = [
            Metric(f"epoch/{k}", r[f"{k}"] - 0.01 * (epochs - e), 0, e)
            for k in ("train_accuracy", "test_accuracy")
            for e in range(1, epochs + 1)
        ]
        curves += [
            Metric(f"epoch/{k}", 0.1 * e, 0, e)
            for k in ("train_loss", "test_loss")
            for e in range(1, epochs + 1)
        ]
        final = {
            "train_accuracy": r["train_accuracy"],
            "test_accuracy": r["test_accuracy"],
            "generalization_gap": r["gap"],
        }
        client.log_batch(
            run_id,
            metrics=[*curves, *(Metric(k, v, 0, 0) for k, v in final.items())],
            params=[Param(k, v) for k, v in r["params"].items()],
        )
        client.set_terminated(run_id)
    return name


def test_report_of_seeds_from_the_store(
    seeds: str, tracking_store: str, tmp_path: Path, capsys
) -> None:
    compare.main(["--experiment", seeds, "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "Welch's t-test" in printed and "Holm-adjusted over 1 comparisons" in printed
    with open(tmp_path / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*compare.GROUP_COLUMNS, "run_ids"]
    assert [(r["config"], r["n"], r["seeds"], r["vs_best"]) for r in rows] == [
        ("activation=elu model.hidden_units=[512]", "2", "0,2", "best"),
        ("activation=tanh model.hidden_units=[512]", "1", "0", "n<2"),
        # Two seeds a side leave Welch's test about one degree of freedom: 0.9025 is not told
        # from 0.98 (p 0.07).
        ("activation=relu model.hidden_units=[64]", "2", "0,1", "tie"),
    ]
    assert float(rows[0]["test_accuracy_mean"]) == pytest.approx(0.98)
    assert rows[1]["test_accuracy_std"] == "" and rows[1]["test_accuracy_ci_low"] == ""
    assert (
        compare.rule(compare.group_rows(compare.rows_of(compare.find_runs(tracking_store, seeds))))
        in (tmp_path / "table.md").read_text()
    )
    for name in ("accuracy.png", "curves.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name

    compare.main(["--experiment", seeds, "--per-run", "--out", str(tmp_path / "runs")])
    with open(tmp_path / "runs" / "table.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*compare.COLUMNS, "run_id"] and len(rows) == 5
    assert capsys.readouterr().out.split()[:4] == ["run", "data", "model", "activation"]


def test_detect_prints_the_seeds_each_configuration_needs_and_writes_nothing(
    seeds: str, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "report"
    compare.main(["--experiment", seeds, "--detect", "0.001", "--out", str(out)])  # exits 0
    lines = capsys.readouterr().out.splitlines()
    # elu and relu ran twice; tanh once (no std): one line each for the first two.
    assert [line.split(":")[0] for line in lines] == [
        "activation=elu model.hidden_units=[512]",
        "activation=relu model.hidden_units=[64]",
    ]
    # elu's std 0.0141 against 0.1%: d = 0.0707. The normal approximation's
    # 2 (z.975 + z.8)^2 / d^2 = 3139.6, which the t-test's exact count exceeds by a little.
    needed = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert 3140 <= needed[0] <= 3145 and 197 <= needed[1] <= 200  # relu: std 0.0035
    assert "seeds per configuration to detect 0.10% with 80% power" in lines[0]
    assert not out.exists()
    for bad in ("0", "1.5", "-0.001"):
        with pytest.raises(SystemExit) as exit_:
            compare.main(["--experiment", seeds, "--detect", bad, "--out", str(out)])
        assert exit_.value.code == 2
        assert f"--detect: invalid value {float(bad)}" in capsys.readouterr().err
    assert not out.exists()


def test_study_per_epoch_uses_the_epochs_every_run_has(
    seeds: str, tracking_store: str, tmp_path: Path
) -> None:
    groups = compare.group_rows(compare.rows_of(compare.find_runs(tracking_store, seeds)))
    study.study_report(tracking_store, groups, "epoch", tmp_path, "elu per epoch")
    with open(tmp_path / "study.csv") as f:
        rows = list(csv.DictReader(f))
    # elu's runs: one stopped after 2 epochs.
    assert [(r["x"], r["n"]) for r in rows] == [("1", "2"), ("2", "2")]
    assert {"test_loss_mean", "test_loss_std", "gap_mean"} <= set(rows[0])
    assert float(rows[0]["test_loss_mean"]) == pytest.approx(0.1)
    assert (tmp_path / "study.png").stat().st_size > 10_000


@pytest.fixture
def server(store: dict) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 over the sweep's store; stopped even if the test fails."""
    with mlflow_server(store["uri"]) as url:
        yield url


def api(url: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.slow
def test_ui_server_lists_the_runs_with_params_metrics_and_histories(server: str) -> None:
    experiment = api(server, "experiments/get-by-name?experiment_name=mnist")["experiment"]
    runs = api(server, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    children = [r for r in runs if any(t["key"] == "sweep_job" for t in r["data"]["tags"])]
    assert len(runs) == 4 and len(children) == 3
    for r in children:
        params = {p["key"]: p["value"] for p in r["data"]["params"]}
        metrics = {m["key"]: m["value"] for m in r["data"]["metrics"]}
        assert params["epochs"] == "2" and params["activation"] in {"relu", "tanh", "elu"}
        assert 0.5 < metrics["test_accuracy"] <= 1 and "generalization_gap" in metrics
        for name in ("epoch/train_accuracy", "epoch/test_accuracy"):
            query = urllib.parse.urlencode({"run_id": r["info"]["run_id"], "metric_key": name})
            history = api(server, f"metrics/get-history?{query}")["metrics"]
            assert sorted(m["step"] for m in history) == [1, 2]


@pytest.mark.slow
def test_a_failed_job_fails_the_sweep_but_not_the_other_jobs(make_project, tmp_path: Path) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    uri = own_store(tmp_path)
    env = {"MLFLOW_TRACKING_URI": uri}
    # A learning rate of 1e30 overflows the weights: the loss is NaN after the first epoch.
    result = run(
        paths.root,
        env,
        "-m",
        "pipeline.train",
        "-m",
        "optimizer.learning_rate=1e30,0.001",
        *SMALL,
        check=False,
    )
    assert result.returncode == 1
    assert "error: job 0: loss became NaN at epoch 1" in result.stderr
    # The sweep's end repeats it (a parallel launcher keeps a job's output in its own log).
    assert (
        "FAILED (1 of 2 finished)\njob 0 (optimizer.learning_rate=1e+30): DivergedError: "
        "loss became NaN at epoch 1\n" in result.stderr
    )
    c = mlflow.MlflowClient(tracking_uri=uri)
    runs = c.search_runs([c.get_experiment_by_name("mnist").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep") == "parent"]
    jobs = {r.data.tags["sweep_job"]: r for r in runs if "sweep_job" in r.data.tags}
    assert parent.info.status == "FAILED" and parent.data.tags["jobs"] == "1 of 2 finished"
    assert jobs["0"].info.status == "FAILED"
    assert jobs["0"].data.tags["error"] == "DivergedError: loss became NaN at epoch 1"
    assert jobs["1"].info.status == "FINISHED" and "test_accuracy" in jobs["1"].data.metrics


@pytest.mark.slow
def test_ui_link_opens_the_mnist_runs_in_the_model_training_view(store: dict) -> None:
    code = (
        "import pathlib, pipeline.tracking.search as t, pipeline.tracking.store as s;"
        "print(t.ui_link(s.tracking_uri(pathlib.Path()), 5055))"
    )
    result = run(store["root"], store["env"], "-c", code)
    experiment = client(store).get_experiment_by_name("mnist").experiment_id
    assert result.stdout.strip() == (
        f"http://127.0.0.1:5055/#/experiments/{experiment}/runs?workflowType=machine_learning"
    )
