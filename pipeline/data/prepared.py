"""The prepared arrays, as training and evaluation read them, and what they were made from.

preprocess writes (N, pixels) uint8 images and (N, classes) one-hot float32 labels as plain
`.npy` files, and `meta.json` beside them: everything that shaped the arrays (the dataset, the
checksums of the raw files they came from, the sample counts, the class count) and the image
shape. Whatever reuses prepared data compares that record with its own config first
(`is_prepared`).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
from omegaconf import DictConfig

from pipeline.data.idx import accepts
from pipeline.errors import ConfigError, DataError
from pipeline.paths import Paths

SPLITS = ("train", "test")
META = "meta.json"
# TensorFlow's CPU kernels need their inputs aligned to 64 bytes.
_ALIGN = 64
# Elements read from a prepared file at a time (a few MB).
_BLOCK = 1 << 22
_HINT = "re-run preprocess (`dvc repro preprocess` or `python -m pipeline.data.preprocess`)"


def meta_for(cfg: DictConfig) -> dict[str, Any]:
    """What this config asks of prepared arrays, besides the raw files' checksums."""
    return {
        "dataset": cfg.data.name,
        "classes": len(cfg.data.classes),
        "train_samples": cfg.data.train_samples,
        "test_samples": cfg.data.test_samples,
    }


def is_prepared(cfg: DictConfig, paths: Paths) -> bool:
    """True when `paths.prepared` holds data prepared exactly as this config asks: the same
    dataset, from raw files with the checksums the config gives, with the same options."""
    meta = paths.prepared / META
    if not meta.is_file():
        return False
    recorded = json.loads(meta.read_text())
    if {k: recorded.get(k) for k in meta_for(cfg)} != meta_for(cfg):
        return False
    return accepts(cfg.data, recorded.get("sha256"))


def read_meta(paths: Paths) -> dict[str, Any]:
    """The prepared data's record (see `is_prepared`)."""
    try:
        return json.loads((paths.prepared / META).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {paths.prepared / META} ({err}); {_HINT}") from None


def split_digest(meta: dict[str, Any], split: str, start: int, stop: int) -> str:
    """Identifies rows `start:stop` of a prepared split: the dataset, the checksums of the
    raw files the split came from, the sample count and the rows (a validation split is the
    training split's last rows)."""
    prefix = {"train": "train-", "test": "t10k-"}[split]
    files = {k: v for k, v in meta["sha256"].items() if k.startswith(prefix) or k.endswith(".npz")}
    record = {"dataset": meta["dataset"], "sha256": files, "samples": meta[f"{split}_samples"],
              "rows": [start, stop]}  # fmt: skip
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:16]


def image_shape(paths: Paths, meta: dict[str, Any] | None = None) -> tuple[int, ...]:
    """The images' shape before preprocess flattened them, as meta.json (or `meta`, read
    from it already) records it."""
    try:
        return tuple((meta or read_meta(paths))["image_shape"])
    except KeyError:
        raise DataError(f"no image shape in {paths.prepared / META}; {_HINT}") from None


def load_prepared(paths: Paths, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map one split's prepared images and labels, checking shapes and dtypes.

    Raises:
        DataError: the files are missing or not what preprocess writes.
    """
    files = [paths.prepared / f"{k}_{split}.npy" for k in ("x", "y")]
    try:
        x, y = (np.load(f, mmap_mode="r", allow_pickle=False) for f in files)
    except (OSError, ValueError) as err:
        msg = f"cannot read prepared {split} data in {paths.prepared} ({err}); {_HINT}"
        raise DataError(msg) from None
    if (
        x.dtype != np.uint8
        or y.dtype != np.float32
        or x.ndim != 2
        or y.ndim != 2
        or y.shape[0] != x.shape[0]
    ):
        raise DataError(
            f"prepared {split} data in {paths.prepared} is stale or damaged "
            f"(x {x.shape} {x.dtype}, y {y.shape} {y.dtype}; expected (N, pixels) uint8 and "
            f"(N, classes) float32); {_HINT}"
        )
    return x, y


def read_aligned(*arrays: np.memmap) -> list[np.ndarray]:
    """Memory-mapped prepared arrays (from `load_prepared`) as float32 in 64-byte aligned
    memory: images scaled to [0, 1] as the seed does, labels as they are.

    TensorFlow can take such a buffer over without copying it
    (`pipeline.models.scoring.as_tensors`): the training set (188 MB as float32) is then in
    memory once, where handing Keras NumPy arrays keeps two more copies.
    """
    copies = []
    for array in arrays:
        nbytes = array.size * np.dtype(np.float32).itemsize
        buffer = np.empty(nbytes + _ALIGN, np.uint8)
        start = -buffer.ctypes.data % _ALIGN
        out = buffer[start : start + nbytes].view(np.float32).reshape(array.shape)
        # Read from the file a block at a time, not through the memory map: mapped pages stay
        # in the process's memory for as long as the map lives.
        flat, chunk = out.reshape(-1), np.empty(_BLOCK, array.dtype)
        with open(array.filename, "rb") as f:
            f.seek(array.offset)
            for start in range(0, array.size, _BLOCK):
                part = chunk[: min(_BLOCK, array.size - start)]
                if f.readinto(memoryview(part).cast("B")) != part.nbytes:
                    raise DataError(f"{array.filename} changed while it was read")
                # Images: the seed's `astype("float32") / 255`, bit for bit; labels as they are.
                if array.dtype == np.uint8:
                    np.divide(part, np.float32(255), out=flat[start : start + len(part)])
                else:
                    flat[start : start + len(part)] = part
        copies.append(out)
    return copies


def split_validation(
    x: np.ndarray, y: np.ndarray, val_split: float, fit_samples: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The rows a model is fitted on and the validation rows: the last `val_split` of the
    training set is held out, as Keras' `validation_split` does, and of the rest the first
    `fit_samples` are fitted on (`data.fit_samples`; None: all)."""
    n_train = len(x) - int(round(len(x) * val_split))
    if fit_samples is not None and fit_samples > n_train:
        raise ConfigError(
            f"data.fit_samples: invalid value {fit_samples}; must be at most {n_train} (the "
            f"training images left after val_split={val_split}), or null for all"
        )
    n_fit = n_train if fit_samples is None else fit_samples
    return x[:n_fit], y[:n_fit], x[n_train:], y[n_train:]
