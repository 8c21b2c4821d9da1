"""Using a trained model: your own images prepared as MNIST's digits were, MLflow logged models
that load anywhere (custom layers included), the registry's `champion`, and serving."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import BIN, config, free_port, python
from PIL import Image

from pipeline.data.images import prepare
from pipeline.errors import DataError
from pipeline.paths import Paths

TEST_DIGITS = 10


def _save(array: np.ndarray, path: Path) -> Path:
    Image.fromarray(array).save(path)  # the mode from the array: uint16 -> I;16, (h, w, 4) -> RGBA
    return path


def _digit(raw_dir: Path, index: int) -> tuple[np.ndarray, int]:
    from pipeline.data.idx import load_raw

    raw = load_raw(raw_dir, 10)
    return raw["x_test"][index], int(raw["y_test"][index])


def _as_photo(image: np.ndarray, size: int = 180) -> np.ndarray:
    """A 28x28 MNIST digit as a person's picture of it: large, black on white, RGB."""
    big = Image.fromarray(255 - image).resize((size, size), Image.BICUBIC)
    return np.asarray(big.convert("RGB"))


# Preparation, on real digits and odd files (no model needed).


def test_a_large_black_on_white_photo_is_prepared_like_mnist(raw_dir: Path, tmp_path: Path) -> None:
    image, _ = _digit(raw_dir, 0)
    prepared = prepare(_save(_as_photo(image), tmp_path / "seven.png"))
    assert prepared.shape == (28, 28) and prepared.dtype == np.float32
    assert prepared.max() == pytest.approx(1.0) and prepared.min() == 0.0
    # Light on dark, inside a 20x20 box, its centre of mass at the centre, as MNIST's.
    rows, cols = np.nonzero(prepared > 0.05)
    assert rows.max() - rows.min() < 21 and cols.max() - cols.min() < 21
    ys, xs = np.indices(prepared.shape)
    mass = prepared.sum()
    assert abs((ys * prepared).sum() / mass - 14) < 1 and abs((xs * prepared).sum() / mass - 14) < 1
    # Much like the original digit (itself prepared that way), pixel for pixel.
    original = image.astype(np.float32) / 255
    assert np.corrcoef(prepared.ravel(), original.ravel())[0, 1] > 0.8


def test_odd_images_are_prepared_or_refused_in_one_line(raw_dir: Path, tmp_path: Path) -> None:
    image, _ = _digit(raw_dir, 1)
    photo = _as_photo(image, 60)
    # 16-bit grayscale, black on white.
    sixteen = (photo[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    deep = _save(sixteen, tmp_path / "deep.png")
    with Image.open(deep) as check:
        assert check.mode.startswith("I")  # really 16 bits a pixel
    assert prepare(deep).max() == pytest.approx(1.0)
    # Black strokes on a transparent background.
    rgba = np.zeros((*photo.shape[:2], 4), np.uint8)
    rgba[..., 3] = 255 - photo[..., 0]
    light_on_dark = prepare(_save(rgba, tmp_path / "strokes.png"))
    assert np.corrcoef(light_on_dark.ravel(), prepare(tmp_path / "deep.png").ravel())[0, 1] > 0.9
    # A tiny image: one bright pixel is a (tiny) digit, scaled up into the box.
    tiny = np.zeros((3, 3), np.uint8)
    tiny[1, 1] = 255
    assert prepare(_save(tiny, tmp_path / "tiny.png")).max() == pytest.approx(1.0)
    # A blank page, and a file that is not an image at all.
    blank = _save(np.full((50, 50, 3), 255, np.uint8), tmp_path / "blank.png")
    with pytest.raises(DataError, match=r"blank.png: no digit found"):
        prepare(blank)
    text = tmp_path / "notes.png"
    text.write_text("not a picture")
    with pytest.raises(DataError, match=r"notes.png: not a readable image"):
        prepare(text)


def test_register_best_ranks_as_compare_does(tracking_store: str) -> None:
    """On validation accuracy when every run has one, else on test accuracy (with a note)."""
    import uuid

    import mlflow

    from pipeline.register import best_run

    client = mlflow.MlflowClient(tracking_store)
    name = f"best-{uuid.uuid4().hex[:8]}"
    experiment = client.create_experiment(name)

    def logged(**metrics: float) -> str:
        run_id = client.create_run(experiment).info.run_id
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        client.set_terminated(run_id)
        return run_id

    on_val = logged(val_accuracy=0.985, test_accuracy=0.978)
    on_test = logged(val_accuracy=0.980, test_accuracy=0.981)
    run, metric = best_run(tracking_store, name, "")
    assert (run.info.run_id, metric) == (on_val, "val_accuracy")
    # One run without a validation score: nothing is ranked on validation.
    logged(test_accuracy=0.979)
    run, metric = best_run(tracking_store, name, "")
    assert (run.info.run_id, metric) == (on_test, "test_accuracy")


@pytest.mark.slow
def test_predict_keeps_going_past_a_bad_file(small_project, raw_dir: Path, tmp_path: Path) -> None:
    """With the DVC pipeline's model (no registry here), each good file gets its line."""
    from pipeline.fit import fit

    paths, cfg = small_project
    project = Paths.project(tmp_path / "project")
    (project.root / "data").mkdir(parents=True)
    (project.root / "data" / "prepared").symlink_to(paths.prepared.parent)
    (project.root / "data" / "raw").symlink_to(paths.raw.parent)
    fit(cfg, project)
    files = []
    for i in range(3):
        image, _ = _digit(raw_dir, i)
        files.append(str(_save(_as_photo(image), tmp_path / f"digit{i}.png")))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 truncated")
    result = python(
        project.root,
        "-m",
        "pipeline.predict",
        *files,
        str(tmp_path / "bad.jpg"),
        "--top",
        "2",
        "--show",
        str(tmp_path / "strip.png"),
        "--request",
        str(tmp_path / "request.json"),
        check=False,
    )
    assert result.returncode == 1  # one file failed ...
    lines = result.stdout.strip().splitlines()
    assert lines[0] == f"model: {project.model}"  # ... and it said which model it used
    assert len([line for line in lines if line.startswith(tuple(files))]) == 3
    assert all(line.count("(") == 2 for line in lines[1:4])  # --top 2
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert error.startswith(f"error: {tmp_path / 'bad.jpg'}: not a readable image")
    assert (tmp_path / "strip.png").read_bytes()[:4] == b"\x89PNG"
    request = json.loads((tmp_path / "request.json").read_text())
    assert np.asarray(request["inputs"]).shape == (3, 784)


# Logged models, the registry and serving (real trainings, real MLflow).

# Only the maxout model must read photos well (the champion, and serving): the others fit
# on fewer images.
ARCHITECTURES = {
    "relu": ["activation=relu", "data.fit_samples=4000"],
    "maxout": ["activation=maxout"],
    "prelu": ["activation=prelu", "data.fit_samples=4000"],
    "cnn": ["model=cnn", "model.filters=[8,16]", "model.dense_units=32", "data.fit_samples=4000"],
}
SMALL = ["data.train_samples=20000", "data.test_samples=1000", "epochs=1", "val_split=0.1"]


@pytest.fixture(scope="module")
def logged(make_project, tmp_path_factory) -> dict:
    """One run per architecture, trained and evaluated, in a store of their own."""
    from pipeline.train import train

    paths, _ = make_project("data.train_samples=20000", "data.test_samples=1000")
    store = tmp_path_factory.mktemp("registry") / "mlflow.db"
    session_store = os.environ["MLFLOW_TRACKING_URI"]
    os.environ["MLFLOW_TRACKING_URI"] = uri = f"sqlite:///{store}"
    try:
        runs = {}
        for name, overrides in ARCHITECTURES.items():
            out = Paths(root=paths.root, out=tmp_path_factory.mktemp(name))
            train(config(*SMALL, *overrides), out)
            runs[name] = json.loads(out.run_info.read_text())["run_id"]
    finally:
        os.environ["MLFLOW_TRACKING_URI"] = session_store
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("mnist").experiment_id
    empty = client.create_run(experiment, run_name="empty").info.run_id  # no model at all
    return {"paths": paths, "uri": uri, "runs": runs, "empty": empty}


def _outside(tmp_path: Path, code: str, uri: str, *args: str) -> subprocess.CompletedProcess:
    """Python in a directory outside the project, the project not importable."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**env, "MLFLOW_TRACKING_URI": uri},
    )


@pytest.mark.slow
def test_logged_models_load_anywhere_for_every_architecture(logged, tmp_path: Path) -> None:
    x, _ = _test_set(logged["paths"])
    np.save(tmp_path / "x.npy", x[:20])
    # One fresh process outside the project loads them all, as a user's script would.
    code = (
        "import mlflow, numpy as np, json, sys\n"
        "for run_id in sys.argv[1:]:\n"
        "    m = mlflow.pyfunc.load_model(f'runs:/{run_id}/model')\n"
        "    p = m.predict(np.load('x.npy'))\n"
        "    print(json.dumps({'shape': list(p.shape), 'meta': m.metadata.metadata}))\n"
    )
    result = _outside(tmp_path, code, logged["uri"], *logged["runs"].values())
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    for name, out in zip(logged["runs"], loaded, strict=True):
        assert out["shape"] == [20, 10], name
        assert out["meta"]["dataset"] == "mnist" and len(out["meta"]["class_names"]) == 10


def _test_set(paths: Paths) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.data.prepared import load_prepared, read_aligned

    x, y = read_aligned(*load_prepared(paths, "test"))
    return x, y.argmax(axis=1)


@pytest.mark.slow
def test_logged_models_are_mlflow_3_models_linked_to_their_runs(logged) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=logged["uri"])
    mlflow.set_tracking_uri(logged["uri"])  # where `models:/` URIs are resolved
    for name, run_id in logged["runs"].items():
        run = client.get_run(run_id)
        models = client.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
        )
        assert [m.name for m in models] == ["model"], name
        # The run's evaluation is linked to the model (the Models tab shows it).
        linked = {m.key: m.value for m in models[0].metrics or []}
        assert linked["test_accuracy"] == run.data.metrics["test_accuracy"], name
        info = mlflow.models.get_model_info(f"models:/{models[0].model_id}")
        assert list(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == [-1, 784]
        assert info.run_id == run_id


@pytest.mark.slow
def test_register_and_predict_with_the_champion(logged, raw_dir: Path, tmp_path: Path) -> None:
    paths, env = logged["paths"], {"MLFLOW_TRACKING_URI": logged["uri"]}
    maxout = logged["runs"]["maxout"]
    result = python(paths.root, "-m", "pipeline.register", maxout, env=env)
    assert "registered mnist version 1" in result.stdout
    assert "alias champion -> version 1" in result.stdout
    # predict: 180x180 black-on-white RGB photos of real test digits, with the champion.
    files, truth = [], []
    for i in range(TEST_DIGITS):
        image, label = _digit(raw_dir, i)
        files.append(str(_save(_as_photo(image), tmp_path / f"d{i}.png")))
        truth.append(label)
    result = python(paths.root, "-m", "pipeline.predict", *files, env=env)
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "model: models:/mnist@champion"
    guesses = [int(line.split(": ")[1].split(" ")[0]) for line in lines[1:]]
    assert sum(g == t for g, t in zip(guesses, truth, strict=True)) >= 9
    # --best: by validation accuracy, since these runs have it; cnn only with a filter.
    result = python(
        paths.root,
        "-m",
        "pipeline.register",
        "--best",
        "--filter",
        "params.model.name = 'cnn'",
        env=env,
    )
    assert "best run by val_accuracy" in result.stdout
    assert logged["runs"]["cnn"] in result.stdout and "version 2" in result.stdout
    # One-line errors.
    for args, expected in [
        (["0" * 32], f"error: no run {'0' * 32} in "),
        ([logged["empty"]], f"error: run {logged['empty']} (empty) logged no model"),
        (["--best", "--filter", "params.activation = 'nothing'"], "error: no finished"),
    ]:
        failed = python(paths.root, "-m", "pipeline.register", *args, env=env, check=False)
        assert failed.returncode == 1 and failed.stderr.strip().startswith(expected), failed.stderr
        assert "Traceback" not in failed.stderr


@pytest.mark.slow
def test_serving_the_registered_maxout_model(logged, tmp_path: Path) -> None:
    paths = logged["paths"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = logged["uri"]
    python(
        paths.root,
        "-m",
        "pipeline.register",
        logged["runs"]["maxout"],
        "--name",
        "served",
        env={"MLFLOW_TRACKING_URI": logged["uri"]},
    )
    port = free_port()
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"),
            "models",
            "serve",
            "-m",
            "models:/served@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "did not start"
                time.sleep(1)
        x, truth = _test_set(paths)
        body = json.dumps({"inputs": x[:50].tolist()}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = np.asarray(json.loads(response.read())["predictions"])
        assert predictions.shape == (50, 10)
        assert (predictions.argmax(axis=1) == truth[:50]).mean() > 0.8
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
