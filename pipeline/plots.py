"""The PNG figures the stages write, drawn with matplotlib's object API (no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def _save(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")


def _image_grid(
    images: np.ndarray, captions: list[str], path: Path, title: str, cols: int, fontsize: int
) -> None:
    """Images (height x width each) in a grid, each with its caption above it.

    The images are tiled into one picture on one axes: a subplot per image cost more than the
    rest of the stage that draws the figure.
    """
    from matplotlib.figure import Figure

    images = np.asarray(images)
    height, width = images.shape[1:3]
    rows = max(1, -(-len(images) // cols))
    pad = 8  # gap around each image (its caption above)
    cell_h, cell_w = height + pad, width + pad
    mosaic = np.zeros((rows * cell_h, cols * cell_w), dtype=images.dtype)
    # Each cell about an inch wide, as matplotlib draws a subplot grid of this many columns.
    fig = Figure(figsize=(cols * 1.2, rows * 1.3 + 0.5))
    ax = fig.add_axes((0, 0, 1, rows * 1.3 / (rows * 1.3 + 0.5)))
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        top, left = divmod(i, cols)
        top, left = top * cell_h + pad, left * cell_w + pad // 2
        mosaic[top : top + height, left : left + width] = image
        ax.text(left + width / 2, top - 1, caption, ha="center", va="bottom", fontsize=fontsize)
    ax.imshow(mosaic, cmap="binary")
    ax.axis("off")
    fig.suptitle(title)
    _save(fig, path)


def samples_grid(
    images: np.ndarray, classes: list[str], path: Path, dataset: str, cols: int = 8
) -> None:
    """Training images (N, height, width) in a grid, each titled with its class name."""
    title = f"{dataset}: training images with their classes"
    _image_grid(images, classes, path, title, cols, 9 if max(map(len, classes)) > 3 else 11)


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


def confusion_matrix(matrix: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    """Counts of true (rows) versus predicted (columns) classes, annotated."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    # Log scale so the few errors stay visible next to the ~1000 correct per class.
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    n = matrix.shape[0]
    ax.set_xticks(range(n), classes, rotation=45 if max(map(len, classes)) > 2 else 0, ha="right")
    ax.set_yticks(range(n), classes)
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


def accuracy_bars(
    labels: list[str],
    train: list[float],
    test: list[float],
    path: Path,
    title: str,
    train_err: list[float] | None = None,
    test_err: list[float] | None = None,
) -> None:
    """Train and test accuracy side by side per run, or per group of runs with error bars (a
    nan error draws none), each pair labelled with its gap."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 0.7 * len(labels) + 2), 5))
    ax = fig.add_subplot()
    xs = np.arange(len(labels))
    width = 0.4
    ax.bar(xs - width / 2, train, width, yerr=train_err, capsize=3, label="train")
    ax.bar(xs + width / 2, test, width, yerr=test_err, capsize=3, label="test")
    # The gap's label goes above the error bars.
    top = np.fmax(
        np.add(train, np.nan_to_num(0 if train_err is None else train_err)),
        np.add(test, np.nan_to_num(0 if test_err is None else test_err)),
    )
    for x, tr, te, y in zip(xs, train, test, top, strict=True):
        ax.annotate(f"{(tr - te) * 100:+.2f}", (x, y), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(xs, labels, rotation=45, ha="right")
    ax.set_ylim(max(0.0, min(test + train) - 0.01), 1.0)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (labels: gap, train minus test, in points)")
    ax.legend(loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def curves_overlay(curves: dict[str, dict[str, list[float]]], path: Path, title: str) -> None:
    """Per-epoch accuracy of several runs: train solid, held-out dashed, one colour per run
    (`curves_band` without bands)."""
    bare = {
        label: {name: (np.asarray(v), np.zeros(len(v))) for name, v in series.items()}
        for label, series in curves.items()
    }
    curves_band(bare, path, title)


def curves_band(
    curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path, title: str
) -> None:
    """Per-epoch mean accuracy of groups of runs, a band of ± one std around each (none for a
    single run): train solid, held-out dashed, one colour per group."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6))
    ax = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(curves))]
    for color, (label, series) in zip(colors, curves.items(), strict=True):
        for name, (mean, std) in series.items():
            epochs = np.arange(1, len(mean) + 1)
            style = "-" if name.startswith("train") else "--"
            ax.plot(
                epochs, mean, style, color=color, marker=".", label=f"{label} {name.split('_')[0]}"
            )
            ax.fill_between(epochs, mean - std, mean + std, color=color, alpha=0.15, lw=0)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    _save(fig, path)


def study(rows: list[dict], x_label: str, path: Path, title: str) -> None:
    """One swept variable's effect: train and test accuracy (left) and their gap (middle)
    against x, mean ± std over each point's runs; with `test_loss_mean` in the rows, the train
    and test loss too (right), where the test loss's U shows when overfitting starts.

    Each row holds `x` (numbers, or strings drawn as categories in the rows' order) and the
    `<metric>_mean` and `<metric>_std` of train_accuracy, test_accuracy and gap.
    """
    from matplotlib.figure import Figure

    xs = [r["x"] for r in rows]
    numeric = all(isinstance(x, int | float) for x in xs)
    positions = xs if numeric else list(range(len(xs)))
    accuracies = ("train_accuracy", "test_accuracy")
    if "train_clean_accuracy_mean" in rows[0]:  # label noise: the true labels' train accuracy
        accuracies += ("train_clean_accuracy",)
    panels = [("accuracy", accuracies), ("gap (train - test)", ("gap",))]
    if "test_loss_mean" in rows[0]:
        panels.append(("loss", ("train_loss", "test_loss")))
    fig = Figure(figsize=(5 * len(panels), 4.5), layout="constrained")
    for i, (y_label, metrics) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for metric in metrics:
            mean = [r[f"{metric}_mean"] for r in rows]
            std = [r[f"{metric}_std"] for r in rows]  # nan for a single run: no bar
            style = {"test": "--", "train_clean": ":"}.get(metric.rsplit("_", 1)[0], "-")
            label = {"train_clean_accuracy": "train, true labels"}.get(metric, metric.split("_")[0])
            ax.errorbar(positions, mean, yerr=std, fmt=style, marker="o", capsize=3, label=label)
        # Sizes and sample counts sweep over decades: even steps on a log axis.
        if numeric and min(xs) > 0 and max(xs) / min(xs) > 30:
            ax.set_xscale("log")
        if not numeric:
            ax.set_xticks(positions, [str(x) for x in xs], rotation=45, ha="right")
        ax.set_xlabel(x_label)
        ax.set_ylabel(y_label)
        ax.grid(alpha=0.3)
        if len(metrics) > 1:
            ax.legend()
    fig.suptitle(f"{title} (mean ± std over seeds)")
    _save(fig, path)


def misclassified_gallery(
    images: np.ndarray,
    truth: list[str],
    predicted: list[str],
    confidence: np.ndarray,
    path: Path,
    cols: int = 8,
) -> None:
    """Test images the model got wrong (N, height, width), each titled true -> predicted
    (confidence)."""
    captions = [f"{t}→{p} ({c:.0%})" for t, p, c in zip(truth, predicted, confidence, strict=True)]
    title = "Most confidently misclassified test images: true → predicted (confidence)"
    _image_grid(images, captions, path, title, cols, 9 if max(map(len, captions)) < 12 else 6)


def prediction_strip(images: np.ndarray, captions: list[str], path: Path) -> None:
    """Images as a model saw them (N, height, width), each titled with its prediction."""
    cols = min(len(images), 10)
    _image_grid(images, captions, path, "As the model saw them: prediction (probability)", cols, 9)
