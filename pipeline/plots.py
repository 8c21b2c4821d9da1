"""The PNG figures the stages write, drawn with matplotlib's object API (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


def samples_grid(images: np.ndarray, labels: np.ndarray, path: Path, cols: int = 8) -> None:
    """Draw 28x28 digits in a grid, each titled with its label."""
    from matplotlib.figure import Figure

    rows = -(-len(images) // cols)
    fig = Figure(figsize=(cols * 1.1, rows * 1.25))
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(image, cmap="binary")
        ax.set_title(str(int(label)), fontsize=11)
        ax.axis("off")
    fig.suptitle("MNIST training digits with their labels")
    _save(fig, path)


def learning_curves(history: dict[str, list[float]], path: Path, title: str) -> None:
    """Loss and accuracy per epoch, one panel each, every series that the history holds."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    for i, metric in enumerate(("loss", "accuracy")):
        ax = fig.add_subplot(1, 2, i + 1)
        for name, values in history.items():
            if name.endswith(metric):
                ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)


def confusion_matrix(matrix: np.ndarray, path: Path, title: str) -> None:
    """Counts of true (rows) versus predicted (columns) digits, annotated."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    # Log scale so the few errors stay visible next to the ~1000 correct per digit.
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    n = matrix.shape[0]
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    threshold = np.log1p(matrix).max() / 2
    for t in range(n):
        for p in range(n):
            color = "white" if np.log1p(matrix[t, p]) > threshold else "black"
            ax.text(p, t, int(matrix[t, p]), ha="center", va="center", fontsize=8, color=color)
    fig.colorbar(shown, ax=ax, label="log(1 + count)")
    ax.set_title(title)
    _save(fig, path)
