"""Shared fixtures: the real MNIST files, an HTTP mirror of them on 127.0.0.1, a throwaway
MLflow store, and small projects prepared from the real data."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from omegaconf import DictConfig

from mnist_support.project import serve_directory as serve_directory  # test_download's too
from pipeline.config import compose
from pipeline.data.idx import IDX_FILES
from pipeline.paths import Paths

ROOT = Path(__file__).resolve().parents[1]

BIN = Path(sys.executable).parent
# Never reach for the official mirrors from a test: only the sources a test names.
OFFLINE = ["data.sources=[]", "data.retries=1", "data.timeout=10"]


# The modules that take longest, first: pytest-xdist (pyproject.toml's addopts) hands each
# worker a whole module at a time in collection order, so the workers then finish together.
LONGEST_FIRST = (
    "test_slurm",
    "test_faults",
    "test_dvc",
    "test_search",
    "test_benchmarks",
    "test_model_use",
    "test_concurrency",
    "test_auth_server",
    "test_activations",
    "test_launchers",
    "test_compare",
    "test_store_failures",
    "test_tracking_server",
    "test_overfitting",
    "test_datasets",
    "test_cli",
    "test_gpu",
    "test_reap",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the modules by LONGEST_FIRST (the others after them, as collected); each module's
    tests keep their order."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.module.__name__, len(rank)))


# Read before the session's fixtures clear the variables for the tests.
_MIRRORS = {v: os.environ.get(v, "") for v in ("MNIST_MIRROR", "FASHION_MNIST_MIRROR")}


# Where the suite keeps the real files it fetched itself (a machine with neither a mirror
# variable nor ../shared/datasets/): fetched once, verified, reused.
CACHE = ROOT / ".cache" / "datasets"


def fetch_dataset(name: str, cache: Path, sources: list[str] | None = None) -> Path:
    """`cache/<name>/`, holding the dataset's four real IDX files: fetched through the
    pipeline's own verified download from the dataset's IDX sources (or `sources`) when not
    there yet.

    Raises:
        DownloadError: no source delivered (offline, say).
    """
    from pipeline.data.download import download
    from pipeline.data.idx import accepts, raw_checksums

    target = cache / name
    cfg = compose([f"data={name}"])  # its real sources, retries and timeout
    present = all((target / f).is_file() for f in IDX_FILES.values())
    if present and accepts(cfg.data, raw_checksums(target)):  # checked again, not trusted
        return target
    shutil.rmtree(target, ignore_errors=True)
    # The IDX sources only: Keras' single mnist.npz is not what the tests read.
    cfg.data.sources = sources if sources is not None else [
        s for s in cfg.data.sources if not s.endswith(".npz")
    ]  # fmt: skip
    work = Paths.project(cache / ".download")
    raw = download(cfg, work)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(raw, target)
    shutil.rmtree(work.root, ignore_errors=True)
    return target


def _local_mirror(variable: str, name: str, shared: str) -> Path:
    """A directory holding a dataset's four real IDX files: $variable, else the shared copy
    beside the project, else the suite's own verified download into .cache/datasets/."""
    env = _MIRRORS[variable]
    candidates = []
    if env.startswith("file://"):
        candidates.append(Path(urllib.request.url2pathname(urllib.parse.urlparse(env).path)))
    elif env and "://" not in env:
        candidates.append(Path(env))
    candidates.append(ROOT.parent / "shared" / "datasets" / shared)
    for path in candidates:
        if all((path / f).is_file() for f in IDX_FILES.values()):
            return path.resolve()
    from pipeline.errors import DownloadError

    try:
        return fetch_dataset(name, CACHE)
    except DownloadError as err:
        pytest.exit(f"error: the tests need the real {name} files: {err}", returncode=1)


@pytest.fixture(scope="session")
def mnist_dir() -> Path:
    """The real MNIST IDX files."""
    return _local_mirror("MNIST_MIRROR", "mnist", "mnist")


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The real Fashion-MNIST IDX files."""
    return _local_mirror("FASHION_MNIST_MIRROR", "fashion_mnist", "fashion-mnist")


@pytest.fixture(scope="session")
def http_mirror(mnist_dir: Path) -> Iterator[str]:
    """The real MNIST files served over HTTP on 127.0.0.1."""
    url, stop = serve_directory(mnist_dir)
    yield url
    stop()


@pytest.fixture(scope="session", autouse=True)
def tracking_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Every run of the session goes to a throwaway SQLite store, never the project's."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.delenv("MNIST_MIRROR", raising=False)
        mp.delenv("FASHION_MNIST_MIRROR", raising=False)
        # Subprocesses (DVC stages, the CLI) must find this venv's python and tools.
        mp.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
        mp.setenv("DVC_NO_ANALYTICS", "1")
        for name, threads in _worker_threads().items():
            mp.setenv(name, threads)
        yield uri


def _worker_threads() -> dict[str, str]:
    """With N pytest-xdist workers, each worker's TensorFlow gets its share of the cores, as
    the pipeline gives the jobs of a parallel sweep: N processes each starting a thread per
    core spend the cores switching between threads."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers <= 1:
        return {}
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {"TF_NUM_INTRAOP_THREADS": threads, "OMP_NUM_THREADS": threads,
            "TF_NUM_INTEROP_THREADS": "1"}  # fmt: skip


@pytest.fixture(autouse=True)
def _session_store(tracking_store: str) -> None:
    """Each test starts on the session's store. The pipeline sets MLflow's process-wide
    tracking URI (and with it MLFLOW_TRACKING_URI) to the store a run used: a fixture or test
    that trained into a store of its own would otherwise leave later tests of its worker there.
    """
    os.environ["MLFLOW_TRACKING_URI"] = tracking_store
    if "mlflow" in sys.modules:
        sys.modules["mlflow"].set_tracking_uri(tracking_store)


def own_store(tmp_path: Path) -> str:
    """The URI of a new SQLite MLflow store of a test's own, in `tmp_path`."""
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def command_env(uri: str | None = None) -> dict[str, str]:
    """The environment of a pipeline command a test starts: this project importable and, with
    `uri`, that MLflow store."""
    return {**os.environ, "PYTHONPATH": str(ROOT), **({"MLFLOW_TRACKING_URI": uri} if uri else {})}


def python(
    cwd: Path, *args: str, env: dict | None = None, check: bool = True
) -> subprocess.CompletedProcess:
    """Run this venv's python with `args` in `cwd`, the project importable, output captured.

    Args:
        env: Variables to set on top of the current environment.
        check: Assert a zero exit status (showing the end of stderr otherwise).
    """
    result = subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def config(*overrides: str) -> DictConfig:
    """The project's config composed from conf/, offline, with `overrides`."""
    return compose([*OFFLINE, *overrides])


@pytest.fixture(scope="session")
def raw_dir(tmp_path_factory: pytest.TempPathFactory, http_mirror: str) -> Path:
    """data/raw as the download stage leaves it, fetched from the HTTP mirror."""
    from pipeline.data.download import download

    paths = Paths.project(tmp_path_factory.mktemp("download"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MNIST_MIRROR", http_mirror)
        download(config(), paths)
    return paths.raw


@pytest.fixture(scope="session")
def make_project(
    tmp_path_factory: pytest.TempPathFactory, raw_dir: Path
) -> Callable[..., tuple[Paths, DictConfig]]:
    """Factory: a project directory with real raw data, prepared with the given overrides."""
    from pipeline.data.preprocess import preprocess

    def make(*overrides: str) -> tuple[Paths, DictConfig]:
        paths = Paths.project(tmp_path_factory.mktemp("project"))
        shutil.copytree(raw_dir, paths.raw)
        cfg = config(*overrides)
        preprocess(cfg, paths)
        return paths, cfg

    return make


@pytest.fixture(scope="session")
def small_project(make_project: Callable) -> tuple[Paths, DictConfig]:
    """Real MNIST cut to 6,000 training and 2,000 test images, trained for one epoch."""
    return make_project("data.train_samples=6000", "data.test_samples=2000", "epochs=1")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(
    backend_uri: str, *args: str, log: Path | None = None, env: dict | None = None
) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 over `backend_uri` (more server options in `args`), its
    output in `log`; yields its URL once /health answers, and stops its whole process group
    (the server and its workers) however the block ends. As `make ui` starts it: without the
    job runners (GenAI evaluations, trace rollups), eight processes that serve no training run.
    """
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(env or {})}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log or os.devnull, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", backend_uri, *args,
             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **env},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text()[-3000:] if log else ""
                    raise RuntimeError(f"mlflow server did not start:\n{tail}") from None
                time.sleep(0.5)
        yield url
    finally:
        # Gone already if it crashed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def download_model(uri: str, run_id: str, dst: Path) -> Path:
    """The model run `run_id` logged (an MLflow 3 logged model), from the store at `uri`, into
    `dst`. MLflow resolves `runs:/<id>/model` through the process's tracking URI, so that is
    pointed at `uri` meanwhile."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        return Path(mlflow.artifacts.download_artifacts(f"runs:/{run_id}/model", dst_path=str(dst)))
    finally:
        mlflow.set_tracking_uri(before)


def assert_run_holds(run: object, metrics: dict) -> None:
    """The MLflow run holds reports/metrics.json: its numbers as metrics, its names (the
    `heldout` set) as tags."""
    for key, value in metrics.items():
        if isinstance(value, str):
            assert run.data.tags[key] == value, key
        else:
            assert run.data.metrics[key] == pytest.approx(value, abs=1e-9), key
