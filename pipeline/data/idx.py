"""Reading the dataset's files: the IDX format (the dataset as published) and Keras' mnist.npz.

Readers check every declared size against the bytes actually present before building an
array, so a truncated or corrupt file is a clear ValueError rather than a crash.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
NPZ_FILE = "mnist.npz"
# What the download stage verified, beside the raw files: {"source": ..., "sha256": {...}}.
MANIFEST = "checksums.json"
_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one MNIST-like data uses
_CHUNK = 1 << 20


def expected_checksums(data: Mapping[str, Any], npz: bool) -> dict[str, str]:
    """The sha256 values a dataset config (`data.*`) gives for its npz or its IDX files, by
    file name: an IDX file's is of its decompressed content, the npz's of the file."""
    if npz:
        return {NPZ_FILE: data["npz_sha256"]}
    return {name: data["idx_sha256"][name] for name in IDX_FILES.values()}


def accepts(data: Mapping[str, Any], checksums: Any) -> bool:
    """True when recorded `checksums` are what the config gives for its IDX files or its npz."""
    return checksums in (expected_checksums(data, npz) for npz in (False, True))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(path: Path) -> str:
    """The sha256 of a gzip file's decompressed content.

    Raises:
        ValueError: the file is not valid gzip data.
    """
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path.name}: corrupt gzip data ({err})") from None
    return digest.hexdigest()


def read_manifest(raw_dir: Path) -> dict[str, Any] | None:
    """What the download verified in `raw_dir`, or None where it left no record."""
    path = raw_dir / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


def raw_checksums(raw_dir: Path) -> dict[str, str]:
    """The checksums of the raw files present, as `expected_checksums` states them."""
    idx = [raw_dir / name for name in IDX_FILES.values()]
    if all(p.is_file() for p in idx):
        return {p.name: content_sha256(p) for p in idx}
    return {NPZ_FILE: file_sha256(raw_dir / NPZ_FILE)}


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Parse uncompressed IDX bytes into a uint8 array of the declared shape.

    Raises:
        ValueError: the header is malformed or disagrees with the data length.
    """
    if len(data) < 4:
        raise ValueError(f"{name}: {len(data)} bytes is too short for an IDX header")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code != _UBYTE or not 1 <= ndim <= 4:
        raise ValueError(
            f"{name}: bad IDX magic number {data[:4].hex()} (expected 000008 then 1-4 dimensions)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{name}: truncated IDX header ({len(data)} of {header} bytes)")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.uint64)) if shape else 0
    if expected != len(data) - header:
        raise ValueError(
            f"{name}: IDX header declares shape {shape} ({expected} bytes) "
            f"but {len(data) - header} data bytes follow"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_idx_gz(path: Path) -> np.ndarray:
    """Read one gzip-compressed IDX file."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path.name}: not a valid gzip file ({err})") from None
    return parse_idx(data, path.name)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Read Keras' mnist.npz: never unpickling, and checking each array's declared size
    against the bytes stored before allocating it."""
    try:
        with zipfile.ZipFile(path) as archive:
            missing = {f"{k}.npy" for k in IDX_FILES} - set(archive.namelist())
            if missing:
                raise ValueError(f"missing arrays {sorted(missing)}")
            return {key: _read_npy(archive, f"{key}.npy") for key in IDX_FILES}
    # zipfile answers a member with an unknown compression method with NotImplementedError,
    # and an encrypted one with RuntimeError: damaged files too, as the others.
    except (
        ValueError,
        OSError,
        EOFError,
        zipfile.BadZipFile,
        zlib.error,
        NotImplementedError,
        RuntimeError,
    ) as err:
        raise ValueError(f"{path.name}: not a valid MNIST npz file ({err})") from None


def _read_npy(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    fmt = np.lib.format
    info = archive.getinfo(name)
    with archive.open(info) as f:
        major, _ = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if major == 1 else fmt.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        if dtype.hasobject:
            raise ValueError(f"{name} holds Python objects, which are never unpickled")
        declared = int(np.prod(shape, dtype=np.uint64)) * dtype.itemsize
        if declared != info.file_size - f.tell():
            raise ValueError(
                f"{name} declares shape {shape} ({declared} bytes) "
                f"but holds {info.file_size - f.tell()}"
            )
        data = f.read()
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(shape, order="F" if fortran_order else "C")


def check_arrays(arrays: dict[str, np.ndarray], num_classes: int) -> dict[str, np.ndarray]:
    """Check images are (N, height, width) uint8, the same size in both splits, and labels
    (N,) uint8 below `num_classes`."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != arrays["x_train"].shape[1:]:
            raise ValueError(
                f"x_{split}: expected (N, {', '.join(map(str, arrays['x_train'].shape[1:]))}) "
                f"uint8, got {x.shape} {x.dtype}"
            )
        if y.dtype != np.uint8 or y.shape != (x.shape[0],):
            raise ValueError(f"y_{split}: expected ({x.shape[0]},) uint8, got {y.shape} {y.dtype}")
        if y.size and y.max() >= num_classes:
            raise ValueError(f"y_{split}: label {int(y.max())} out of range 0-{num_classes - 1}")
    return arrays


def load_raw(raw_dir: Path, num_classes: int) -> dict[str, np.ndarray]:
    """Load the raw dataset from `raw_dir`, in whichever layout download stored.

    Returns:
        uint8 arrays `x_train`, `y_train`, `x_test`, `y_test`.
    """
    idx = {key: raw_dir / name for key, name in IDX_FILES.items()}
    if all(p.is_file() for p in idx.values()):
        return check_arrays({key: read_idx_gz(p) for key, p in idx.items()}, num_classes)
    if (raw_dir / NPZ_FILE).is_file():
        return check_arrays(read_npz(raw_dir / NPZ_FILE), num_classes)
    raise FileNotFoundError(
        f"no data files in {raw_dir} (expected the four IDX .gz files or {NPZ_FILE}); "
        "run `dvc repro download` or `python -m pipeline.data.download`"
    )
