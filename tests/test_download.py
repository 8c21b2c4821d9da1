"""The download stage: every kind of source, verification, and failures that leave nothing."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import config, serve_directory
from test_mnist import idx_bytes, synthetic_arrays

from pipeline.data.download import download
from pipeline.data.idx import IDX_FILES, MANIFEST, NPZ_FILE, load_raw
from pipeline.errors import DownloadError
from pipeline.paths import Paths

# sha256 of the decompressed content of each file, as conf/data/mnist.yaml lists them.
EXPECTED = dict(config().data.idx_sha256)


def content_sha256(path: Path) -> str:
    return hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()


def assert_real_mnist(raw: Path) -> None:
    assert sorted(p.name for p in raw.iterdir()) == sorted([*IDX_FILES.values(), MANIFEST])
    for name, sha in EXPECTED.items():
        assert content_sha256(raw / name) == sha


def test_http_mirror_downloads_verified_files(
    tmp_path: Path, http_mirror: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_MIRROR", http_mirror)
    paths = Paths.project(tmp_path)
    assert download(config(), paths) == paths.raw
    assert_real_mnist(paths.raw)
    assert [p.name for p in tmp_path.joinpath("data", "raw").iterdir()] == ["mnist"]  # no temp


@pytest.mark.parametrize("form", ["directory", "file-url"])
def test_local_mirror_forms(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    monkeypatch.setenv(
        "MNIST_MIRROR", str(mnist_dir) if form == "directory" else mnist_dir.as_uri()
    )
    paths = Paths.project(tmp_path)
    download(config(), paths)
    assert_real_mnist(paths.raw)


def test_sources_from_config_are_tried_after_a_failing_mirror(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MNIST_MIRROR", str(tmp_path / "nowhere"))
    paths = Paths.project(tmp_path / "project")
    download(config(f"data.sources=[{mnist_dir}]"), paths)
    assert_real_mnist(paths.raw)


def write_idx_mirror(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_FILES.items():
        (directory / name).write_bytes(gzip.compress(idx_bytes(arrays[key])))


def test_checksum_mismatch_names_file_and_both_hashes_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = synthetic_arrays()
    write_idx_mirror(tmp_path / "mirror", fake)
    url, stop = serve_directory(tmp_path / "mirror")
    monkeypatch.setenv("MNIST_MIRROR", url)
    paths = Paths.project(tmp_path / "project")
    try:
        with pytest.raises(DownloadError) as err:
            download(config(), paths)
    finally:
        stop()
    name = IDX_FILES["x_train"]
    actual = hashlib.sha256(idx_bytes(fake["x_train"])).hexdigest()
    message = str(err.value)
    assert f"{name}: sha256 of content is {actual}, expected {EXPECTED[name]}" in message
    assert not paths.raw.exists()
    assert list(paths.raw.parent.iterdir()) == []


def test_all_sources_failing_lists_each_with_its_reason(
    tmp_path: Path, mnist_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in list(IDX_FILES.values())[:3]:  # the test labels are missing
        shutil.copy(mnist_dir / name, partial)
    url, stop = serve_directory(partial)
    monkeypatch.setenv("MNIST_MIRROR", f"{url}missing/")
    paths = Paths.project(tmp_path / "project")
    try:
        with pytest.raises(DownloadError) as err:
            download(config(f"data.sources=[{partial}]"), paths)
    finally:
        stop()
    message = str(err.value)
    assert "\n" not in message
    assert f"{url}missing/: HTTP 404" in message
    assert f"{partial}: t10k-labels-idx1-ubyte.gz: no such file in {partial}" in message
    assert "MNIST_MIRROR" in message
    assert not paths.raw.exists()


def test_npz_source_is_verified_as_downloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    arrays = synthetic_arrays()
    npz = tmp_path / "site" / NPZ_FILE
    npz.parent.mkdir()
    np.savez(npz, **arrays)
    sha = hashlib.sha256(npz.read_bytes()).hexdigest()
    url, stop = serve_directory(npz.parent)
    monkeypatch.setenv("MNIST_MIRROR", f"{url}{NPZ_FILE}")
    paths = Paths.project(tmp_path / "project")
    try:
        with pytest.raises(DownloadError, match=f"mnist.npz: sha256 is {sha}, expected"):
            download(config(), paths)  # the real npz's hash is expected
        download(config(f"data.npz_sha256={sha}"), paths)
    finally:
        stop()
    np.testing.assert_array_equal(load_raw(paths.raw, 10)["y_train"], arrays["y_train"])


def test_the_suite_fetches_the_real_files_itself_once_and_checks_them_again(
    tmp_path: Path, http_mirror: str, mnist_dir: Path
) -> None:
    """Without a mirror or ../shared/ (a newcomer's machine), conftest's `fetch_dataset`
    downloads the real files through the pipeline's verified download: here from sources
    served on 127.0.0.1."""
    from conftest import fetch_dataset

    cache = tmp_path / "cache"
    fetched = fetch_dataset("mnist", cache, sources=[http_mirror])
    assert fetched == cache / "mnist"
    assert_real_mnist(fetched)
    assert sorted(p.name for p in cache.iterdir()) == ["mnist"]  # no download leftovers
    # Reused with no source at all: it is there and still the real data.
    assert fetch_dataset("mnist", cache, sources=[]) == fetched
    # A cached file that changed is not trusted: fetched again.
    (fetched / IDX_FILES["y_test"]).write_bytes(gzip.compress(b"not the labels"))
    assert fetch_dataset("mnist", cache, sources=[http_mirror]) == fetched
    assert_real_mnist(fetched)
    # Offline, nothing cached: the download's own one-line error, and nothing left behind.
    shutil.rmtree(fetched)
    with pytest.raises(DownloadError, match="could not download mnist from any source"):
        fetch_dataset("mnist", cache, sources=["http://127.0.0.1:9/"])
    assert not (cache / "mnist").exists()


@pytest.mark.slow  # a pytest run of its own
def test_offline_with_no_mirror_the_suite_stops_in_one_line(tmp_path: Path) -> None:
    """The whole suite on a machine with no mirror, no ../shared/ and no network: pytest
    stops at the first test that needs the real files, with one line saying why."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    project = tmp_path / "clone"
    shutil.copytree(ROOT / "tests", project / "tests")
    for name in ("pipeline", "conf", "hydra_plugins", "benchmarks"):
        (project / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "pyproject.toml", project)
    (project / "tests" / "test_offline_probe.py").write_text(
        "def test_needs_mnist(mnist_dir):\n    pass\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_MIRROR")}
    # No network: the official sources point nowhere (an empty proxy refuses every URL).
    env |= {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-n",
            "0",  # one test: no workers
            "tests/test_offline_probe.py",
        ],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1
    lines = [line for line in result.stdout.splitlines() if "error: the tests need" in line]
    assert len(lines) == 1, result.stdout[-3000:]
    assert "could not download mnist from any source" in lines[0]
    assert "MNIST_MIRROR" in lines[0]
