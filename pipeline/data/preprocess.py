"""Stage 2, preprocess: exactly the seed's preparation, stored for fast, pickle-free loading
(`dvc repro preprocess`, or `python -m pipeline.data.preprocess`).

Images become (N, height x width) rows of their uint8 pixels; labels become (N, classes)
one-hot float32. Each array is a plain `.npy` file, so training memory-maps it instead of
parsing anything, and scales the pixels to [0, 1] float32 as the seed does while it reads
them (`pipeline.data.prepared.read_aligned`): stored as bytes, the images are a quarter of
the size for preprocess to write and for DVC to hash and cache. `meta.json` records what
shaped them (`pipeline.data.prepared`). Raw and prepared
data are kept per dataset (data/raw/<name>/, data/prepared/<name>/).
"""

from __future__ import annotations

import json

import numpy as np
from omegaconf import DictConfig

from pipeline import plots
from pipeline.cli import run_stage
from pipeline.data.idx import load_raw, raw_checksums, read_manifest
from pipeline.data.prepared import META, SPLITS, meta_for
from pipeline.io import atomic_dir
from pipeline.paths import Paths


def prepare_images(images: np.ndarray) -> np.ndarray:
    """(N, 28, 28) uint8 -> (N, 784) uint8 rows, as the seed reshapes them (any image size
    alike); `pipeline.data.prepared.read_aligned` scales them to [0, 1] as the seed does."""
    return np.ascontiguousarray(images.reshape(len(images), -1), dtype=np.uint8)


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(N,) class indices -> (N, classes) float32 one-hot rows."""
    return np.eye(num_classes, dtype=np.float32)[labels]


def preprocess(cfg: DictConfig, paths: Paths) -> dict[str, tuple[int, ...]]:
    """Prepare `paths.raw` into `paths.prepared` and draw the sample grid.

    Returns:
        The shape of each array written.
    """
    paths = paths.of(cfg.data.name)
    num_classes = len(cfg.data.classes)
    raw = load_raw(paths.raw, num_classes)
    # What the raw files are: as the download verified them, else computed here.
    manifest = read_manifest(paths.raw)
    limits = {"train": cfg.data.train_samples, "test": cfg.data.test_samples}
    shapes = {}
    with atomic_dir(paths.prepared) as tmp:
        for split in SPLITS:
            n = limits[split]  # None keeps every image
            arrays = {
                f"x_{split}": prepare_images(raw[f"x_{split}"][:n]),
                f"y_{split}": one_hot(raw[f"y_{split}"][:n], num_classes),
            }
            for name, array in arrays.items():
                np.save(tmp / f"{name}.npy", array)
                shapes[name] = array.shape
        meta = {
            **meta_for(cfg),
            "sha256": manifest["sha256"] if manifest else raw_checksums(paths.raw),
            "image_shape": list(raw["x_train"].shape[1:]),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
    names = [cfg.data.classes[int(label)] for label in raw["y_train"][:32]]
    plots.samples_grid(raw["x_train"][:32], names, paths.samples_plot, cfg.data.name)
    print(", ".join(f"{k} {v}" for k, v in shapes.items()))
    return shapes


def main() -> None:
    """Prepare data/raw/ into data/prepared/ (reshape, scale, one-hot)."""
    run_stage(lambda cfg: preprocess(cfg, paths=Paths.project()), main.__doc__)


if __name__ == "__main__":
    main()
