"""The IDX and npz readers, on small synthetic files and on the real dataset."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.idx import IDX_FILES, NPZ_FILE, load_raw, parse_idx, read_idx_gz, read_npz


def idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += b"".join(struct.pack(">I", d) for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_round_trips_images_and_labels() -> None:
    images = np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(3, 28, 28)
    labels = np.array([7, 0, 9], dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images)), images)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels)), labels)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "too short"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 1) + b"\x00" * 4, "bad IDX magic"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"\x00", "bad IDX magic"),
        (b"\x00\x00\x08\x03" + struct.pack(">I", 2), "truncated IDX header"),
        (idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-1], r"declares shape \(2, 28, 28\)"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2**32 - 1) + b"\x00", "declares shape"),
    ],
    ids=["short", "type", "zero-bytes", "header", "truncated-data", "absurd-size"],
)
def test_parse_idx_rejects_corrupt_data(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_idx(data, "sample")


def test_read_idx_gz_rejects_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)))  # right content, not compressed
    with pytest.raises(ValueError, match="train-labels-idx1-ubyte.gz: not a valid gzip"):
        read_idx_gz(path)


def synthetic_arrays(n_train: int = 5, n_test: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def test_load_raw_reads_the_idx_layout(tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    for key, name in IDX_FILES.items():
        (tmp_path / name).write_bytes(gzip.compress(idx_bytes(arrays[key])))
    loaded = load_raw(tmp_path, 10)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_load_raw_reads_the_keras_npz_layout(tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    np.savez(tmp_path / NPZ_FILE, **arrays)
    loaded = load_raw(tmp_path, 10)
    for key, array in arrays.items():
        np.testing.assert_array_equal(loaded[key], array)


def test_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    arrays = {**synthetic_arrays(), "x_train": np.array([{"not": "pixels"}], dtype=object)}
    np.savez(tmp_path / NPZ_FILE, **arrays)
    with pytest.raises(ValueError, match="x_train.npy holds Python objects, which are never"):
        read_npz(tmp_path / NPZ_FILE)


def test_load_raw_rejects_labels_out_of_range(tmp_path: Path) -> None:
    arrays = synthetic_arrays()
    arrays["y_test"][0] = 10
    np.savez(tmp_path / NPZ_FILE, **arrays)
    with pytest.raises(ValueError, match="y_test: label 10 out of range"):
        load_raw(tmp_path, 10)


def test_load_raw_without_files_says_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"python -m pipeline\.data\.download"):
        load_raw(tmp_path, 10)


def test_real_mnist_matches_the_published_facts(mnist_dir: Path) -> None:
    data = load_raw(mnist_dir, 10)
    assert data["x_train"].shape == (60000, 28, 28)
    assert data["x_test"].shape == (10000, 28, 28)
    assert data["y_train"][:5].tolist() == [5, 0, 4, 1, 9]
    assert data["y_train"][-3:].tolist() == [5, 6, 8]
    assert data["y_test"][:3].tolist() == [7, 2, 1]
    assert data["y_test"][-3:].tolist() == [4, 5, 6]
    assert np.bincount(data["y_train"]).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert np.bincount(data["y_test"]).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    pixels = data["x_train"].astype(np.float64) / 255
    assert pixels.mean() == pytest.approx(0.1306604762738429, abs=1e-12)
    assert pixels.std() == pytest.approx(0.3081078038564622, abs=1e-12)
