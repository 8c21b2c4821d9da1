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
