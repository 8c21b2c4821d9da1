"""Stage 2, preprocess: exactly the seed's preparation, stored for fast, pickle-free loading.

Images become (N, 784) float32 in [0, 1]; labels become (N, 10) one-hot float32. Each array is
a plain `.npy` file, so training memory-maps it instead of parsing anything.
"""

from __future__ import annotations

import json

import numpy as np
from omegaconf import DictConfig

from pipeline import plots
from pipeline.config import PipelineError
from pipeline.io import atomic_dir
from pipeline.mnist import IMAGE_SHAPE, NUM_CLASSES, load_raw
from pipeline.paths import Paths

SPLITS = ("train", "test")
FEATURES = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
META = "meta.json"


# TensorFlow's CPU kernels need their inputs aligned to 64 bytes.
_ALIGN = 64


class DataError(PipelineError):
    """Prepared data is missing, stale or damaged."""


def prepare_images(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 784) float32 scaled to [0, 1], as the seed does."""
    pixels = images.reshape(len(images), FEATURES).astype(np.float32)
    pixels /= 255  # in place: one float32 copy of the set, not two
    return pixels


def one_hot(labels: np.ndarray) -> np.ndarray:
    """(N,) digits -> (N, 10) float32 one-hot rows."""
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def preprocess(cfg: DictConfig, paths: Paths) -> dict[str, tuple[int, ...]]:
    """Prepare `paths.raw` into `paths.prepared` and draw the sample grid.

    Returns:
        The shape of each array written.
    """
    raw = load_raw(paths.raw)
    limits = {"train": cfg.data.train_samples, "test": cfg.data.test_samples}
    shapes = {}
    with atomic_dir(paths.prepared) as tmp:
        for split in SPLITS:
            n = limits[split]  # None keeps every image
            arrays = {
                f"x_{split}": prepare_images(raw[f"x_{split}"][:n]),
                f"y_{split}": one_hot(raw[f"y_{split}"][:n]),
            }
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array)
                shapes[name] = array.shape
        # What was prepared, so `pipeline.train` can tell whether it matches its config.
        (tmp / META).write_text(json.dumps(_meta(cfg), indent=2) + "\n")
    plots.samples_grid(raw["x_train"][:32], raw["y_train"][:32], paths.samples_plot)
    print(", ".join(f"{k} {v}" for k, v in shapes.items()))
    return shapes


def _meta(cfg: DictConfig) -> dict:
    return {"train_samples": cfg.data.train_samples, "test_samples": cfg.data.test_samples}


def is_prepared(cfg: DictConfig, paths: Paths) -> bool:
    """True when `paths.prepared` holds data prepared with this config's sample limits."""
    meta = paths.prepared / META
    return meta.is_file() and json.loads(meta.read_text()) == _meta(cfg)


def load_prepared(paths: Paths, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Memory-map one split's prepared images and labels, checking shapes and dtypes.

    Raises:
        DataError: the files are missing or not what preprocess writes.
    """
    hint = "re-run preprocess (`dvc repro preprocess` or `python -m pipeline.preprocess`)"
    files = [paths.prepared / f"{k}_{split}.npy" for k in ("x", "y")]
    try:
        x, y = (np.load(f, mmap_mode="r", allow_pickle=False) for f in files)
    except (OSError, ValueError) as err:
        msg = f"cannot read prepared {split} data in {paths.prepared} ({err}); {hint}"
        raise DataError(msg) from None
    if (
        x.dtype != np.float32
        or y.dtype != np.float32
        or x.ndim != 2
        or x.shape[1] != FEATURES
        or y.shape != (x.shape[0], NUM_CLASSES)
    ):
        raise DataError(
            f"prepared {split} data in {paths.prepared} is stale or damaged "
            f"(x {x.shape} {x.dtype}, y {y.shape} {y.dtype}; expected (N, {FEATURES}) and "
            f"(N, {NUM_CLASSES}) float32); {hint}"
        )
    return x, y


def read_aligned(*arrays: np.memmap) -> list[np.ndarray]:
    """Memory-mapped prepared arrays (from load_prepared) read into memory aligned as
    TensorFlow requires, for `as_tensors`."""
    copies = []
    for array in arrays:
        buffer = np.empty(array.nbytes + _ALIGN, np.uint8)
        start = -buffer.ctypes.data % _ALIGN
        data = buffer[start : start + array.nbytes]
        # load_prepared checked the .npy header; the data follows it, C-ordered.
        with open(array.filename, "rb") as f:
            f.seek(array.offset)
            if f.readinto(memoryview(data)) != array.nbytes:
                raise DataError(f"{array.filename} changed while it was read")
        copies.append(data.view(array.dtype).reshape(array.shape))
    return copies


def as_tensors(arrays: list[np.ndarray]) -> list:
    """Arrays from `read_aligned` as TensorFlow tensors that take their memory over (DLPack).

    TensorFlow's own conversion of a NumPy array keeps two more copies of it (the training
    set is 188 MB); this way the data is in memory once.
    """
    import tensorflow as tf

    return [tf.experimental.dlpack.from_dlpack(a.__dlpack__()) for a in arrays]


def split_validation(
    x: np.ndarray, y: np.ndarray, val_split: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out the last `val_split` of the training set, as Keras' `validation_split` does."""
    n_fit = len(x) - int(round(len(x) * val_split))
    return x[:n_fit], y[:n_fit], x[n_fit:], y[n_fit:]


def main() -> None:
    """Prepare data/raw/ into data/prepared/ (reshape, scale, one-hot)."""
    from pipeline.cli import run_stage

    run_stage(lambda cfg: preprocess(cfg, Paths.project()), main.__doc__)


if __name__ == "__main__":
    from pipeline.cli import run

    run(main)
