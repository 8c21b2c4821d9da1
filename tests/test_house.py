"""The house rules, checked on the code itself: every module a DVC stage runs is among the
stage's deps, no import cycles, no process-wide tricks, mlflow only in tracking, Keras only
in the models and the stages that train and evaluate, data/ without TensorFlow, models/ and
config kept apart from the rest.

Imports are read from the source (every `import`, at any depth, and modules loaded by name),
so a lazy import inside a function counts like one at the top. The slow test at the end runs
each stage for real and compares what Python actually imported with these closures.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, python

PACKAGE = ROOT / "pipeline"
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module an import name refers to (`pipeline.models.layers.hidden` -> its
    module), or None for anything outside the project."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def imported_names(module: str) -> set[str]:
    """Every module name `module` imports, wherever the import stands, and the modules it
    loads by name (`importlib.import_module("...")`, `pkgutil.iter_modules`)."""
    tree = ast.parse(MODULES[module].read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = _package_of(module).split(".")
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func.endswith("import_module") and node.args:
                arg = node.args[0]
                names.add(arg.value if isinstance(arg, ast.Constant) else "*dynamic*")
            elif func.endswith("iter_modules"):
                package = _package_of(module)
                names.update(m for m in MODULES if m.startswith(package + "."))
    return names


def project_imports(module: str) -> set[str]:
    """The project modules `module` imports: each named module and the packages above it
    (Python runs a package's __init__ first), except `module`'s own packages, which are
    already running when it is."""
    own = {module.rsplit(".", i)[0] for i in range(module.count(".") + 1)}
    found = set()
    for name in imported_names(module):
        target = _resolve(name)
        if target is None:
            continue
        parts = target.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return found - own


GRAPH = {m: project_imports(m) for m in MODULES}


def closure(entry: str) -> set[str]:
    """What `python -m entry` runs: the module, its packages, and all they import."""
    parts = entry.split(".")
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(GRAPH[module])
    return seen


def stage_entry(stage: dict) -> str:
    match = re.match(r"python -m (\S+)", stage["cmd"])
    assert match, f"stage command {stage['cmd']!r} is not `python -m <module>`"
    return match.group(1)


def covered(path: Path, deps: list[str]) -> bool:
    rel = path.relative_to(ROOT).as_posix()
    return any(rel == d.rstrip("/") or rel.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_module_a_stage_runs_is_in_its_deps(stage: str) -> None:
    deps = [d for d in STAGES[stage]["deps"] if isinstance(d, str)]
    missing = [
        MODULES[m].relative_to(ROOT).as_posix()
        for m in sorted(closure(stage_entry(STAGES[stage])))
        if not covered(MODULES[m], deps)
    ]
    assert not missing, f"dvc.yaml stage {stage} runs but does not list: {missing}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_only_code_the_stage_runs(stage: str) -> None:
    """No stage re-runs for code it never runs: each code dep is in its closure."""
    run = {MODULES[m] for m in closure(stage_entry(STAGES[stage]))}
    for dep in STAGES[stage]["deps"]:
        if dep.startswith("pipeline/"):
            assert any(p == ROOT / dep or (ROOT / dep) in p.parents for p in run), dep


def test_reports_sweeps_and_the_cli_run_in_no_stage() -> None:
    """A change to the comparison report, sweeps or the user's command re-runs nothing."""
    for stage in STAGES.values():
        ran = closure(stage_entry(stage))
        assert not ran & {"pipeline.compare", "pipeline.sweep", "pipeline.train"}, stage["cmd"]


def test_the_closure_follows_lazy_and_by_name_imports(tmp_path: Path) -> None:
    """The analysis itself: an import inside a function and a module loaded by name count."""
    assert "pipeline.models.build" in GRAPH["pipeline.fit"]  # imported in a function
    assert "pipeline.data.download" in GRAPH["pipeline.train"]  # likewise
    assert "pipeline.models" in GRAPH["pipeline.fit"]  # the package above an imported module
    source = "import importlib\ndef f():\n    importlib.import_module('pipeline.compare')\n"
    probe = PACKAGE / "_probe_by_name.py"
    probe.write_text(source)
    try:
        MODULES["pipeline._probe_by_name"] = probe
        assert "pipeline.compare" in project_imports("pipeline._probe_by_name")
    finally:
        probe.unlink()
        del MODULES["pipeline._probe_by_name"]


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            components.append([v, *component])

    for v in GRAPH:
        if v not in index:
            visit(v)
    return [sorted(c) for c in components if len(c) > 1]


def test_no_import_cycles() -> None:
    assert _cycles() == []


def test_a_cycle_would_be_found() -> None:
    GRAPH["pipeline.config"].add("pipeline.cli")  # cli imports config; now back
    try:
        assert ["pipeline.cli", "pipeline.config"] in _cycles()
    finally:
        GRAPH["pipeline.config"].discard("pipeline.cli")


def _external(module: str) -> set[str]:
    return {n.split(".")[0] for n in imported_names(module) if _resolve(n) is None}


def _in_tracking(module: str) -> bool:
    return module == "pipeline.tracking" or module.startswith("pipeline.tracking.")


def test_mlflow_is_imported_only_by_tracking() -> None:
    users = {m for m in MODULES if "mlflow" in _external(m)}
    assert users, "nothing imports mlflow: the check itself is broken"
    assert {m for m in users if not _in_tracking(m)} == set()
    # A module outside the package that imported mlflow would be found.
    assert not _in_tracking("pipeline.fit") and not _in_tracking("pipeline.trackingx")


KERAS_MODULES = {"pipeline.models", "pipeline.fit"}


def test_keras_and_tensorflow_are_imported_only_by_models_and_stages() -> None:
    users = {m for m in MODULES if _external(m) & {"keras", "tensorflow"}}
    assert users, "nothing imports Keras: the check itself is broken"
    stray = {m for m in users if not any(m == k or m.startswith(k + ".") for k in KERAS_MODULES)}
    assert not stray


def test_the_evaluate_stage_loads_no_tensorflow_even_indirectly() -> None:
    """It reports on the predictions the train stage saved (pipeline.predictions)."""
    for ran in closure("pipeline.evaluate"):
        assert not _external(ran) & {"keras", "tensorflow"}, ran


def test_data_loads_no_tensorflow_or_keras_even_indirectly() -> None:
    for module in [m for m in MODULES if m.startswith("pipeline.data")]:
        for ran in closure(module):
            assert not _external(ran) & {"keras", "tensorflow"}, f"{module} via {ran}"


def test_models_know_nothing_of_mlflow_dvc_paths_or_the_config() -> None:
    allowed = {"pipeline", "pipeline.activations", "pipeline.errors"}
    for module in [m for m in MODULES if m.startswith("pipeline.models")]:
        outside = {m for m in GRAPH[module] if not m.startswith("pipeline.models")}
        assert outside <= allowed, module
        assert not _external(module) & {"mlflow", "dvc", "omegaconf", "hydra"}, module


def test_config_imports_no_stage_model_or_tracking() -> None:
    assert closure("pipeline.config") == {
        "pipeline", "pipeline.config", "pipeline.schema", "pipeline.activations", "pipeline.errors",
        "pipeline.data", "pipeline.data.idx",  # the dataset format's file names
    }  # fmt: skip
    assert GRAPH["pipeline.errors"] == set()


STAGE_MODULES = {stage_entry(s) for s in STAGES.values()}


def test_stage_modules_do_not_import_each_other() -> None:
    for module in STAGE_MODULES:
        assert not (closure(module) - {module}) & STAGE_MODULES, module


# What acts on the whole process rather than on the pipeline's own work.
TRICKS = {
    "os._exit": "skips every exit handler (MLflow's flush among them)",
    "sys.modules": "changes what every later import in the process sees",
    "subprocess.Popen": "a helper process",
    "multiprocessing": "helper processes",
    "os.fork": "a helper process",
}


def test_no_process_wide_tricks() -> None:
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute | ast.Name):
                text = ast.unparse(node)
                found += [f"{module}: {text} ({why})" for t, why in TRICKS.items() if text == t]
            elif isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                found += [f"{module}: imports {n}" for n in names if n == "multiprocessing"]
    assert not found


# Rooms a newcomer reads in one sitting.
MAX_FUNCTION_LINES, MAX_MODULE_LINES = 60, 400


def room_sizes(paths: list[Path]) -> list[str]:
    """Each module over MAX_MODULE_LINES lines and each function (or method) over
    MAX_FUNCTION_LINES, decorators and docstring included, as `path:line name has N lines`."""
    found = []
    for path in paths:
        text = path.read_text()
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        if (lines := len(text.splitlines())) > MAX_MODULE_LINES:
            found.append(f"{where} has {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                if (length := node.end_lineno - start + 1) > MAX_FUNCTION_LINES:
                    found.append(f"{where}:{start} {node.name} has {length} lines")
    return found


def test_every_function_and_module_is_a_room_read_in_one_sitting() -> None:
    code = sorted([*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").glob("*.py")])
    assert room_sizes(code) == []


def test_an_oversized_function_or_module_would_be_found(tmp_path: Path) -> None:
    long = tmp_path / "roomy.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    long.write_text(f"def roomy():\n{body}\n" + "\n" * MAX_MODULE_LINES)
    assert room_sizes([long]) == [
        f"roomy.py has {MAX_FUNCTION_LINES + 1 + MAX_MODULE_LINES} lines",
        f"roomy.py:1 roomy has {MAX_FUNCTION_LINES + 1} lines",
    ]


def test_the_shared_house_check_agrees(tmp_path: Path) -> None:
    """The workplace's own checker, where it is beside the project, reports nothing."""
    checker = ROOT.parent / "shared" / "tools" / "house_check.py"
    if not checker.is_file():
        pytest.skip(f"{checker} is not here")
    result = python(ROOT, str(checker), ".", check=False)
    assert result.returncode == 0, result.stdout


@pytest.mark.slow
def test_stages_import_only_what_their_deps_list(make_project, mnist_dir: Path) -> None:
    """Run each stage for real with `python -X importtime` and check every project module
    Python loaded against the stage's deps (and against the static closure)."""
    from omegaconf import OmegaConf

    from pipeline.config import compose

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    cfg = compose(
        ["data.sources=[]", "data.train_samples=2000", "data.test_samples=500", "epochs=1",
         "model.hidden_units=[32]"]
    )  # fmt: skip
    params = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    (paths.root / "params.yaml").write_text(yaml.safe_dump(params))
    mirror = str(mnist_dir)
    for name in ("download", "preprocess", "train", "evaluate"):
        stage = STAGES[name]
        result = python(
            paths.root, "-X", "importtime", "-m", stage_entry(stage),
            env={"MNIST_MIRROR": mirror},
        )  # fmt: skip
        loaded = set(re.findall(r"\|\s+(pipeline(?:\.\w+)*)\s*$", result.stderr, re.M))
        assert "pipeline.cli" in loaded, result.stderr[-2000:]  # the analysis saw the run
        assert loaded <= closure(stage_entry(stage)), name
        deps = [d for d in stage["deps"] if isinstance(d, str)]
        assert all(covered(MODULES[m], deps) for m in loaded), name
