"""What the commands do to start and end quickly, checked for what it must not cost: the
exit without the interpreter's teardown (`pipeline.cli.run`), Keras imported without
scikit-learn, pandas and pyplot (`pipeline.backend`), and the evaluate stage's MLflow logging from a
helper process (`pipeline.tracking.RunLogger`)."""

from __future__ import annotations

import json
import os
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import OFFLINE, python
from omegaconf import OmegaConf

SMALL = [*OFFLINE, "epochs=1", "data.train_samples=3000", "data.test_samples=1000",
         "model.hidden_units=[64]"]  # fmt: skip


def _command(tmp_path: Path, body: str) -> Path:
    """A script whose `main` runs as a pipeline command (`pipeline.cli.run`)."""
    script = tmp_path / "command.py"
    script.write_text(
        textwrap.dedent(
            """
            import atexit, logging, sys
            from pipeline.cli import run

            def main():
                # An exit handler and a log file registered by the command's own work.
                atexit.register(lambda: open("handler-ran", "w").write("yes"))
                handler = logging.FileHandler("command.log")
                logging.getLogger("job").addHandler(handler)
                logging.getLogger("job").warning("the last line")
                print("printed last", end="")
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
        + "\nrun(main)\n"
    )
    return script


def test_a_finished_command_runs_exit_handlers_and_flushes_its_output(tmp_path: Path) -> None:
    script = _command(tmp_path, "")
    result = python(tmp_path, str(script))
    assert result.returncode == 0
    assert result.stdout == "printed last"  # flushed, though the interpreter was not torn down
    assert (tmp_path / "handler-ran").read_text() == "yes"
    assert (tmp_path / "command.log").read_text() == "the last line\n"


@pytest.mark.parametrize(("body", "status"), [("sys.exit(3)", 3), ("raise RuntimeError('x')", 1)])
def test_a_failed_command_keeps_its_exit_status(tmp_path: Path, body: str, status: int) -> None:
    result = python(tmp_path, str(_command(tmp_path, body)), check=False)
    assert result.returncode == status
    assert (tmp_path / "handler-ran").read_text() == "yes"
    assert (tmp_path / "command.log").read_text() == "the last line\n"


def test_keras_starts_without_its_optional_imports_which_stay_importable(tmp_path) -> None:
    code = """
        import sys
        from pipeline.backend import keras
        from pipeline.layers import Maxout
        loaded = {m for m in ("sklearn", "pandas", "matplotlib.pyplot") if m in sys.modules}
        assert not loaded, loaded
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6), Maxout(2)])
        model.save("m.keras")
        assert keras.saving.load_model("m.keras", safe_mode=True).output_shape == (None, 3)
        import sklearn, pandas, matplotlib.pyplot
        print("ok")
    """
    assert python(tmp_path, "-c", textwrap.dedent(code)).stdout.strip() == "ok"


@pytest.fixture
def trained_stage(make_project) -> tuple[Path, str]:
    """A project as the train stage leaves it (params.yaml, models/), and its store (the
    session's: MLflow keeps the URI a training in this process used)."""
    from pipeline.config import compose
    from pipeline.paths import Paths
    from pipeline.train import train

    paths, _ = make_project("data.train_samples=3000", "data.test_samples=1000")
    cfg = compose(SMALL)
    params = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    (paths.root / "params.yaml").write_text(yaml.safe_dump(params))
    train(cfg, Paths.project(paths.root))
    return paths.root, os.environ["MLFLOW_TRACKING_URI"]


def _helpers_of(root: Path) -> list[str]:
    """Command lines of RunLogger helpers still running for `root`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"pipeline.tracking" in args and str(root).encode() in args:
            found.append(" ".join(a.decode() for a in args))
    return found


def test_evaluate_stage_logs_its_reports_through_the_helper(trained_stage) -> None:
    import mlflow

    root, uri = trained_stage
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri})
    metrics = json.loads((root / "reports" / "metrics.json").read_text())
    assert json.loads(result.stdout.strip().splitlines()[-1]) == metrics
    client = mlflow.MlflowClient(tracking_uri=uri)
    run = client.get_run(json.loads((root / "models" / "run.json").read_text())["run_id"])
    assert run.info.status == "FINISHED"
    for key, value in metrics.items():
        assert run.data.metrics[key] == pytest.approx(value, abs=1e-9)
    assert {f"test_accuracy_digit_{d}" for d in range(10)} <= set(run.data.metrics)
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "per_class_accuracy.csv", "confusion.csv"} <= logged
    plots = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert {"plots/confusion_matrix.png", "plots/misclassified.png"} <= plots
    assert _helpers_of(root) == []


def test_a_store_that_cannot_record_fails_the_evaluate_stage_in_one_line(trained_stage) -> None:
    root, _ = trained_stage
    (root / "not-a-dir").write_text("")
    uri = f"sqlite:///{root / 'not-a-dir' / 'mlflow.db'}"
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri}, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: MLflow: "), result.stderr[-2000:]
    assert str(root / "not-a-dir") in last  # the store's path, which cannot be a directory
    assert _helpers_of(root) == []


def test_a_failed_evaluation_ends_the_helper_without_logging(trained_stage) -> None:
    import mlflow

    root, uri = trained_stage
    run_id = json.loads((root / "models" / "run.json").read_text())["run_id"]
    (root / "models" / "model.keras").unlink()
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri}, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model at ")
    assert _helpers_of(root) == []
    (root / "models" / "run.json").unlink()  # nothing trained at all: the same one line
    result = python(root, "-m", "pipeline.evaluate", env={"MLFLOW_TRACKING_URI": uri}, check=False)
    assert result.stderr.strip().splitlines()[-1].startswith("error: no model at ")
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(run_id)
    assert "test_accuracy" not in run.data.metrics  # only the training's epoch metrics
