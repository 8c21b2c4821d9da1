"""Every activation with the seed's setup, and the CNN once: accuracy, overfitting, time.

Trains each configuration through the pipeline's own `train` and `evaluate` (so each is an
MLflow run, tagged `benchmark=activations`), then writes docs/results.md (a table of train
accuracy, test accuracy, gap and seconds) and docs/results.png. Every number in them is one
this script measured, with the machine and the date it ran.

    python benchmarks/activations.py                  # the full run (about 10 minutes)
    python benchmarks/activations.py --tiny --out /tmp/results   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
    """CPU model, core count and library versions, for the results' header."""
    import keras
    import tensorflow as tf

    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )


def run_all(configs: list[tuple[str, list[str]]], root: Path, out: Path) -> list[dict]:
    import keras

    from pipeline.config import compose, validate
    from pipeline.evaluate import evaluate
    from pipeline.fit import fit
    from pipeline.paths import Paths
    from pipeline.train import ensure_data

    rows = []
    for label, overrides in configs:
        cfg = validate(compose(overrides))
        paths = Paths(root=root, out=out / "runs" / label)
        ensure_data(cfg, paths)
        start = time.perf_counter()
        fit(cfg, paths, entry_point="benchmark", tags={"benchmark": "activations"})
        metrics = evaluate(cfg, paths)
        seconds = time.perf_counter() - start
        rows.append({"label": label, "seconds": seconds, **metrics})
        print(f"{label}: test {metrics['test_accuracy']:.4f} in {seconds:.0f} s", flush=True)
        keras.backend.clear_session()
    return rows


def write_results(rows: list[dict], out: Path, setup: str) -> None:
    from pipeline import plots
    from pipeline.io import write_text

    ranked = sorted(rows, key=lambda r: -r["test_accuracy"])
    lines = [
        "# Activations compared",
        "",
        f"Measured by `benchmarks/activations.py` on {datetime.date.today().isoformat()}, "
        f"on {machine()}.",
        "",
        setup,
        "",
        "| run | train accuracy | test accuracy | gap (train - test) | seconds |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in ranked:
        lines.append(
            f"| {r['label']} | {r['train_accuracy']:.4f} | {r['test_accuracy']:.4f} "
            f"| {r['generalization_gap']:+.4f} | {r['seconds']:.0f} |"
        )
    lines += [
        "",
        "Seconds are wall-clock for training and evaluating one run (model building, fit,",
        "scoring both sets, logging to MLflow), in one process after start-up.",
        "",
        "![train versus test accuracy per run](results.png)",
        "",
    ]
    write_text(out / "results.md", "\n".join(lines))

    plots.accuracy_bars(
        [r["label"] for r in ranked],
        [r["train_accuracy"] for r in ranked],
        [r["test_accuracy"] for r in ranked],
        out / "results.png",
        "Train versus test accuracy per activation",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where results go")
    parser.add_argument(
        "--tiny", action="store_true", help="1 epoch on 2,000 images: checks the script only"
    )
    args = parser.parse_args(argv)

    from pipeline.config import Activation

    activations = [a.name for a in Activation]
    common: list[str] = []
    setup = (
        "Each MLP run is the seed's setup with only the activation changed: one hidden "
        "Dense(512), RMSprop, 5 epochs, batch 128, all 60,000 training images, seed 0. "
        "The CNN runs with its shipped defaults (`model=cnn`)."
    )
    if args.tiny:
        activations = ["relu", "elu", "maxout"]
        common = ["epochs=1", "data.train_samples=2000", "data.test_samples=500"]
        setup = "Tiny mode: 1 epoch on 2,000 training images; a check of the script, not results."
    configs = [(f"mlp-{a}", [f"activation={a}", *common]) for a in activations]
    cnn = ["model=cnn", *common]
    if args.tiny:
        cnn += ["model.filters=[8]", "model.dense_units=16"]
    configs.append(("cnn-relu", cnn))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = run_all(configs, Path.cwd(), args.out if args.tiny else ROOT / "outputs" / "benchmarks")
    write_results(rows, args.out, setup)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.png'}")


if __name__ == "__main__":
    sys.exit(main())
