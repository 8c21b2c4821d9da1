"""Datasets as a config choice: Fashion-MNIST beside MNIST, each kept in directories of its
own, prepared data reused only when everything that shaped it matches, and every run saying
which data it saw."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import OFFLINE, config, python

from pipeline.data.download import download, is_downloaded
from pipeline.data.idx import IDX_FILES, MANIFEST, content_sha256, load_raw
from pipeline.data.prepared import META, is_prepared
from pipeline.data.preprocess import preprocess
from pipeline.errors import ConfigError, DownloadError
from pipeline.paths import Paths


def changed_checksum(cfg, name: str, value: str):
    """`cfg` with one IDX file's checksum replaced (file names hold dots, so no override)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["data"]["idx_sha256"][name] = value
    return OmegaConf.create(plain)


FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


def test_fashion_mnist_is_a_config_choice_with_its_classes_mirror_and_experiment() -> None:
    from pipeline.config import validate

    cfg = validate(config("data=fashion_mnist"))
    assert cfg.data.name == "fashion_mnist" and list(cfg.data.classes) == FASHION_CLASSES
    assert cfg.data.mirror_env == "FASHION_MNIST_MIRROR" and cfg.data.npz_sha256 is None
    assert cfg.tracking.experiment == "fashion_mnist"
    renamed = validate(config("data=fashion_mnist", "tracking.experiment=clothes"))
    assert renamed.tracking.experiment == "clothes"
    mnist = validate(config())
    assert (mnist.data.mirror_env, mnist.tracking.experiment) == ("MNIST_MIRROR", "mnist")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (
            ["data=fashion_mnist", "data.sources=[http://x/mnist.npz]"],
            "data.sources: invalid value 'http://x/mnist.npz'; must be IDX bases only while",
        ),
        (["data.classes=[a]"], "data.classes: invalid value ['a']; must be at least 2 distinct"),
        (["data.npz_sha256=abc"], "data.npz_sha256: invalid value 'abc'; must be 64 hex digits"),
        (["data.mirror_env=no-such var"], "data.mirror_env: invalid value 'no-such var'; must"),
        (["data=imagenet"], "data: invalid value 'imagenet'; valid choices: fashion_mnist, mnist"),
    ],
)
def test_bad_dataset_settings_are_refused_in_one_line(overrides: list, expected: str) -> None:
    from pipeline.config import validate

    with pytest.raises(ConfigError) as err:
        validate(config(*overrides))
    assert str(err.value).startswith(expected) and "\n" not in str(err.value)


def test_a_dataset_without_a_checksum_for_each_file_is_refused() -> None:
    from omegaconf import OmegaConf

    from pipeline.config import validate

    plain = OmegaConf.to_container(config("data=fashion_mnist"), resolve=True)
    del plain["data"]["idx_sha256"][IDX_FILES["y_test"]]
    with pytest.raises(ConfigError, match=r"^data\.idx_sha256: .* must be a checksum for each of"):
        validate(plain)


def test_real_fashion_mnist_matches_the_published_facts(fashion_dir: Path) -> None:
    data = load_raw(fashion_dir, 10)
    assert data["x_train"].shape == (60000, 28, 28) and data["x_test"].shape == (10000, 28, 28)
    assert data["y_train"][:5].tolist() == [9, 0, 0, 3, 0]
    assert data["y_train"][-3:].tolist() == [3, 0, 5]
    assert data["y_test"][:5].tolist() == [9, 2, 1, 1, 6]
    assert data["y_test"][-3:].tolist() == [8, 1, 5]
    assert np.bincount(data["y_train"]).tolist() == [6000] * 10
    assert np.bincount(data["y_test"]).tolist() == [1000] * 10
    sha = dict(config("data=fashion_mnist").data.idx_sha256)
    assert {name: content_sha256(fashion_dir / name) for name in sha} == sha


def test_each_dataset_downloads_from_its_own_mirror_into_its_own_directory(
    tmp_path: Path, mnist_dir: Path, fashion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_MIRROR", str(mnist_dir))
    monkeypatch.setenv("FASHION_MNIST_MIRROR", str(fashion_dir))
    for name in ("fashion_mnist", "mnist"):
        cfg = config(f"data={name}")
        raw = download(cfg, Paths.project(tmp_path))
        assert raw == tmp_path / "data" / "raw" / name
        manifest = json.loads((raw / MANIFEST).read_text())
        assert manifest == {
            "source": os.environ[cfg.data.mirror_env],
            "sha256": dict(cfg.data.idx_sha256),
        }
        assert is_downloaded(cfg, Paths.project(tmp_path))
    assert sorted(p.name for p in (tmp_path / "data" / "raw").iterdir()) == [
        "fashion_mnist",
        "mnist",
    ]
    # Raw files verified against other checksums are not this config's.
    other = changed_checksum(config("data=fashion_mnist"), IDX_FILES["y_test"], "0" * 64)
    assert not is_downloaded(other, Paths.project(tmp_path))


def test_a_mirror_holding_other_data_is_refused_by_checksum_and_leaves_nothing(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FASHION_MNIST_MIRROR", str(mnist_dir))  # MNIST's files
    cfg = config("data=fashion_mnist")
    name = IDX_FILES["x_train"]
    got = config().data.idx_sha256[name]  # what MNIST's content hashes to
    expected = cfg.data.idx_sha256[name]
    with pytest.raises(DownloadError) as err:
        download(cfg, Paths.project(tmp_path))
    message = str(err.value)
    assert f"{name}: sha256 of content is {got}, expected {expected}" in message
    assert "FASHION_MNIST_MIRROR" in message and "\n" not in message
    assert list((tmp_path / "data" / "raw").iterdir()) == []  # no data, no temporary files


def test_prepared_data_is_reused_only_when_everything_that_shaped_it_matches(
    make_project,
) -> None:
    paths, cfg = make_project("data.train_samples=500", "data.test_samples=100")
    meta = json.loads((paths.prepared / META).read_text())
    assert meta["dataset"] == "mnist" and meta["sha256"] == dict(cfg.data.idx_sha256)
    assert meta["image_shape"] == [28, 28] and meta["classes"] == 10
    same = config("data.train_samples=500", "data.test_samples=100", "epochs=3")
    assert is_prepared(same, paths)  # training options do not shape the data
    for changed in (
        config("data.train_samples=501", "data.test_samples=100"),
        config("data.train_samples=500", "data.test_samples=null"),
        changed_checksum(same, IDX_FILES["x_train"], "1" * 64),
        config(
            "data.train_samples=500",
            "data.test_samples=100",
            "data.classes=[a,b,c,d,e,f,g,h,i,j,k]",
        ),
    ):
        assert not is_prepared(changed, paths), changed.data
    # Another dataset's config looks in its own directory, where nothing is prepared yet.
    other = config("data=fashion_mnist", "data.train_samples=500", "data.test_samples=100")
    assert not is_prepared(other, paths.of("fashion_mnist"))
    assert not (paths.root / "data" / "prepared" / "fashion_mnist").exists()


def test_preprocess_records_the_checksums_it_was_made_from_without_a_manifest(
    make_project, tmp_path: Path
) -> None:
    paths, cfg = make_project("data.train_samples=100", "data.test_samples=100")
    (paths.raw / MANIFEST).unlink()  # files put there by hand: preprocess hashes them
    preprocess(cfg, paths)
    assert is_prepared(cfg, paths)


@pytest.mark.slow
def test_switching_datasets_in_one_checkout_trains_each_time_on_the_right_data(
    tmp_path: Path, mnist_dir: Path, fashion_dir: Path
) -> None:
    import mlflow

    env = {"MNIST_MIRROR": str(mnist_dir), "FASHION_MNIST_MIRROR": str(fashion_dir)}
    small = [
        *OFFLINE,
        "epochs=1",
        "data.train_samples=3000",
        "data.test_samples=1000",
        "model.hidden_units=[64]",
    ]
    runs = []
    for name in ("mnist", "fashion_mnist", "mnist"):
        result = python(tmp_path, "-m", "pipeline.train", f"data={name}", *small, env=env)
        run_id = result.stdout.split("MLflow run ")[1].split("(")[1].split(")")[0]
        runs.append(mlflow.MlflowClient().get_run(run_id))
    first, fashion, again = runs
    accuracy = [r.data.metrics["test_accuracy"] for r in runs]
    # Each trained on its own data: MNIST's digits are easier than Fashion-MNIST's clothes,
    # and the same config on the same data gives the same model, bit for bit.
    assert accuracy[0] == accuracy[2] > 0.7 and 0.5 < accuracy[1] < accuracy[0] - 0.05, accuracy
    assert fashion.data.params["data.name"] == "fashion_mnist"
    assert fashion.info.run_name == "fashion_mnist-mlp-relu-rmsprop-e1-b128"
    assert first.info.run_name == "mlp-relu-rmsprop-e1-b128"
    experiments = {r.info.experiment_id for r in (first, again)}
    assert len(experiments) == 1 and fashion.info.experiment_id not in experiments
    assert mlflow.MlflowClient().get_experiment(fashion.info.experiment_id).name == "fashion_mnist"
    # MLflow knows the data: training and test sets as dataset inputs, by content.
    inputs = {i.dataset.name: i for i in fashion.inputs.dataset_inputs}
    assert set(inputs) == {"fashion_mnist-train", "fashion_mnist-test"}
    contexts = {
        n: {t.key: t.value for t in i.tags}["mlflow.data.context"] for n, i in inputs.items()
    }
    assert contexts == {"fashion_mnist-train": "training", "fashion_mnist-test": "test"}
    assert str(fashion_dir) in inputs["fashion_mnist-train"].dataset.source
    digests = [{i.dataset.name: i.dataset.digest for i in r.inputs.dataset_inputs} for r in runs]
    assert digests[0] == digests[2] and digests[0]["mnist-train"] != digests[0]["mnist-test"]
    # Both datasets stay prepared side by side; the third run reused MNIST's.
    prepared = tmp_path / "data" / "prepared"
    assert sorted(p.name for p in prepared.iterdir()) == ["fashion_mnist", "mnist"]


@pytest.mark.slow
def test_a_sweep_over_datasets_logs_each_job_to_its_dataset_and_finishes(
    tmp_path: Path, mnist_dir: Path, fashion_dir: Path
) -> None:
    import mlflow

    env = {"MNIST_MIRROR": str(mnist_dir), "FASHION_MNIST_MIRROR": str(fashion_dir)}
    python(
        tmp_path,
        "-m",
        "pipeline.train",
        "-m",
        "data=mnist,fashion_mnist",
        *OFFLINE,
        "epochs=1",
        "data.train_samples=1000",
        "data.test_samples=500",
        "model.hidden_units=[32]",
        env=env,
    )
    client = mlflow.MlflowClient()
    (parent_file,) = (tmp_path / "multirun").glob("*/*/mlflow_parent.json")
    recorded = json.loads(parent_file.read_text())
    parent = client.get_run(recorded["run_id"])
    assert parent.info.status == "FINISHED" and parent.data.tags["jobs"] == "2 of 2 finished"
    assert recorded["status"] == "FINISHED"  # the sweep's status, beside its parent run's id
    names = {}
    for experiment in ("mnist", "fashion_mnist"):
        exp = client.get_experiment_by_name(experiment)
        children = client.search_runs(
            [exp.experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
        )
        names[experiment] = [c.data.params["data.name"] for c in children]
    assert names == {"mnist": ["mnist"], "fashion_mnist": ["fashion_mnist"]}


def test_the_mirror_variables_reach_ci() -> None:
    """CI points both datasets' variables at the shared copies."""
    from conftest import ROOT

    ci = (ROOT / ".ci" / "run").read_text()
    assert "FASHION_MNIST_MIRROR" in ci and "fashion-mnist" in ci
