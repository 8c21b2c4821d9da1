"""The project's declarations agree with its code: dvc.yaml with paths.py and conf/, git
ignores what DVC and MLflow produce."""

from __future__ import annotations

import subprocess

import yaml
from conftest import ROOT
from omegaconf import OmegaConf

from pipeline.config import compose
from pipeline.paths import Paths

DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
PATHS = Paths.project(ROOT)


def _names(entries: list) -> set[str]:
    """The paths, with dvc.yaml's `${data.name}` as DVC fills it from params.yaml."""
    name = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]["name"]
    paths = {e if isinstance(e, str) else next(iter(e)) for e in entries}
    return {p.replace("${data.name}", name) for p in paths}


def _rel(*paths) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in paths}


def test_stage_outputs_are_the_paths_the_code_writes() -> None:
    def outs(stage: str) -> set[str]:
        s = DVC[stage]
        return _names(s.get("outs", [])) | _names(s.get("metrics", []))

    assert outs("download") == _rel(PATHS.raw)
    assert outs("preprocess") == _rel(PATHS.prepared, PATHS.samples_plot)
    assert outs("train") == _rel(
        PATHS.model,
        PATHS.run_info,
        PATHS.predictions,
        PATHS.learning_curves,
        PATHS.history,
    )
    assert outs("evaluate") == _rel(
        PATHS.metrics,
        PATHS.per_class,
        PATHS.confusion,
        PATHS.confusion_plot,
        PATHS.misclassified_plot,
    )


def test_stages_run_their_own_module_and_depend_on_it() -> None:
    modules = {
        "download": "pipeline.data.download",
        "preprocess": "pipeline.data.preprocess",
        "train": "pipeline.fit",
        "evaluate": "pipeline.evaluate",
    }
    assert set(DVC) == set(modules)
    for name, stage in DVC.items():
        assert stage["cmd"].split()[:3] == ["python", "-m", modules[name]]
        assert modules[name].replace(".", "/") + ".py" in stage["deps"]
        for dep in stage["deps"]:
            assert (ROOT / dep).exists() or dep.startswith(("data/", "models/")), dep


def test_stage_params_exist_in_the_config() -> None:
    cfg = compose()
    for stage in DVC.values():
        for key in stage.get("params", []):
            assert OmegaConf.select(cfg, key, default=KeyError) is not KeyError, key


def test_each_model_has_a_module_a_schema_and_a_config_of_its_name() -> None:
    from pipeline.config import MODELS as SCHEMAS
    from pipeline.models.build import BUILDERS as MODELS

    assert set(MODELS) == set(SCHEMAS)
    for name in MODELS:
        assert (ROOT / "pipeline" / "models" / f"{name}.py").is_file()
        assert (ROOT / "conf" / "model" / f"{name}.yaml").is_file()
    assert {p.stem for p in (ROOT / "conf" / "model").glob("*.yaml")} == set(MODELS)


def test_generated_files_are_ignored_by_git() -> None:
    for path in (
        "data/raw/x",
        "models/model.keras",
        "mlflow.db",
        "mlruns/1",
        "outputs/x",
        "multirun/x",
        ".venv/bin/python",
    ):
        result = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
        assert result.returncode == 0, f"{path} is not git-ignored"


def test_the_ui_binds_to_this_machine_only() -> None:
    recipe = (ROOT / "Makefile").read_text().split("\nui:", 1)[1].split("\n\n", 1)[0]
    assert "mlflow ui" in recipe and "--host 127.0.0.1" in recipe
    assert "0.0.0.0" not in (ROOT / "Makefile").read_text()
