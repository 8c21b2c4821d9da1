"""Every activation with the seed's setup, and the CNN: accuracy, overfitting, time, over seeds.

Trains each configuration with several seeds through the pipeline's own `fit` and `evaluate`
(so each is an MLflow run, tagged `benchmark=activations`), groups the runs as
`pipeline.compare` does (mean and std over seeds, the 95% interval of the test accuracy, each
configuration tested against the best of its model), then writes docs/results.md and
docs/results.png. Every number in them is one this script measured, with the machine and the
date it ran.

    python benchmarks/activations.py                  # the full run (about 30 minutes)
    python benchmarks/activations.py --tiny --out /tmp/results   # a quick check
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import time
import uuid
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


def run_all(
    configs: list[tuple[str, list[str]]], seeds: dict[str, int], root: Path, out: Path, batch: str
) -> None:
    """Train and evaluate each configuration with seeds 0..n-1 (`seeds[label]`), each an
    MLflow run tagged `benchmark=activations` and `benchmark_batch=<batch>`."""
    import keras

    from pipeline.config import compose, validate
    from pipeline.evaluate import evaluate
    from pipeline.fit import fit
    from pipeline.paths import Paths
    from pipeline.train import ensure_data

    tags = {"benchmark": "activations", "benchmark_batch": batch}
    for label, overrides in configs:
        for seed in range(seeds[label]):
            cfg = validate(compose([*overrides, f"seed={seed}"]))
            paths = Paths(root=root, out=out / "runs" / f"{label}-{seed}")
            ensure_data(cfg, paths)
            start = time.perf_counter()
            fit(cfg, paths, entry_point="benchmark", tags=tags)
            metrics = evaluate(cfg, paths)
            print(
                f"{label} seed {seed}: test {metrics['test_accuracy']:.4f} in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
            keras.backend.clear_session()


def last_batch(uri: str) -> str:
    """The batch of the latest run this script logged in the store at `uri`."""
    from pipeline.tracking.search import search_runs
    from pipeline.tracking.store import DEFAULT_EXPERIMENT

    runs = search_runs(
        uri,
        DEFAULT_EXPERIMENT,
        "tags.benchmark = 'activations'",
        ["attributes.start_time DESC"],
        1,
    )
    if not runs or "benchmark_batch" not in runs[0].data.tags:
        sys.exit("error: no runs of this benchmark in the store; run it first")
    return runs[0].data.tags["benchmark_batch"]


def grouped(uri: str, batch: str) -> list[dict]:
    """The batch's runs in the store at `uri` as pipeline.compare groups them: one row per
    configuration (runs equal but for their seed), each model on its own (every MLP activation
    tested against the best MLP, Holm-adjusted over those comparisons: the CNN is another
    question), the CNN first."""
    from pipeline import compare
    from pipeline.tracking.search import search_runs
    from pipeline.tracking.store import DEFAULT_EXPERIMENT

    runs = search_runs(uri, DEFAULT_EXPERIMENT, f"tags.benchmark_batch = '{batch}'", [], 1000) or []
    durations = {r.info.run_id: (r.info.end_time - r.info.start_time) / 1000 for r in runs}
    rows = compare.rows_of(runs)
    groups = []
    for model in sorted({r["model"] for r in rows}):  # cnn, mlp
        groups += compare.group_rows([r for r in rows if r["model"] == model])
    for group in groups:
        group["label"] = f"{group['model']}-{group['activation']}"
        # The MLflow run's duration: fit, scoring, logging and evaluation.
        group["seconds"] = sum(durations[r] for r in group["run_ids"]) / group["n"]
    return groups


def _pm(group: dict, metric: str, signed: bool = False) -> str:
    from pipeline.replicates import plus_minus

    return plus_minus(group[f"{metric}_mean"], group[f"{metric}_std"], signed=signed)


def _versus(group: dict) -> tuple[str, str, str, str]:
    """The difference from the best of its model with its 95% interval, Holm's p, the
    verdict, and for a tie the seeds per configuration that would tell it."""
    if group["vs_best"] == "best":
        return "-", "-", "**best**", "-"
    if group["vs_best"] == "n<2":
        return f"{group['diff_vs_best']:+.4f}", "-", "n<2", "-"
    low, high = group["diff_ci_low"], group["diff_ci_high"]
    diff = f"{group['diff_vs_best']:+.4f} ({low:+.4f} to {high:+.4f})"
    seeds, p = group["seeds_needed"], group["p_holm"]
    needed = "-"
    if group["vs_best"] == "tie":
        needed = "more than 100,000" if math.isinf(seeds) else f"{seeds}"
    return diff, "<0.001" if p < 0.001 else f"{p:.3f}", group["vs_best"], needed


def write_results(groups: list[dict], out: Path, setup: str) -> None:
    from pipeline import compare, plots
    from pipeline.io import write_text

    mlp = [g for g in groups if g["model"] == "mlp"] or groups
    lines = [
        "# Activations compared",
        "",
        f"Measured by `benchmarks/activations.py` on {datetime.date.today().isoformat()}, "
        f"on {machine()}.",
        "",
        setup,
        "",
        f"The MLPs as `pipeline.compare` reports them. {compare.rule(mlp)}",
        "",
        "| configuration | n | train accuracy | test accuracy | 95% interval (test) "
        "| gap (train - test) | best - this (95% interval) | p (Holm) | vs the best of its "
        "model | seeds to tell | seconds per run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    previous = (out / "results.md").read_text() if (out / "results.md").is_file() else ""
    # Sections written by hand below this script's own (from its second `# ` heading on).
    kept = previous[start:] if (start := previous.find("\n# ") + 1) > 0 else ""
    for g in groups:
        lines.append(
            f"| {g['label']} | {g['n']} | {_pm(g, 'train_accuracy')} | {_pm(g, 'test_accuracy')}"
            f" | {g['test_accuracy_ci_low']:.4f} - {g['test_accuracy_ci_high']:.4f}"
            f" | {_pm(g, 'gap', signed=True)} | {' | '.join(_versus(g))} | {g['seconds']:.0f} |"
        )
    lines += [
        "",
        "Mean ± standard deviation over the seeds. Each configuration is compared with the "
        "best of its own model (every MLP activation with the best MLP) as `pipeline.compare` "
        "does: Welch's t-test of the difference of mean test accuracies, its p adjusted by "
        "Holm's method over all the comparisons with that best; `worse` when the adjusted p "
        'is below 0.05, else `tie`. A tie is not an equality: "seeds to tell" is how many '
        "seeds per configuration a 5% test would need to detect the measured difference with "
        "80% power (at the two configurations' pooled std). Seconds are each MLflow run's "
        "duration (fit, scoring both sets, logging, evaluation), in one process after "
        "start-up.",
        "",
        "![train versus test accuracy per configuration, error bars of one std](results.png)",
        "",
    ]
    write_text(out / "results.md", "\n".join(lines) + (f"\n{kept}" if kept else ""))

    plots.accuracy_bars(
        [g["label"] for g in groups],
        [g["train_accuracy_mean"] for g in groups],
        [g["test_accuracy_mean"] for g in groups],
        out / "results.png",
        "Train versus test accuracy per configuration (mean ± std over seeds)",
        [g["train_accuracy_std"] for g in groups],
        [g["test_accuracy_std"] for g in groups],
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where results go")
    parser.add_argument("--seeds", type=int, help="seeds per MLP activation (5; tiny: 2)")
    parser.add_argument("--cnn-seeds", type=int, help="seeds of the CNN (3, 4 min each; tiny: 1)")
    parser.add_argument(
        "--tiny", action="store_true", help="1 epoch on 2,000 images: checks the script only"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="rewrite the results from the last batch"
    )
    args = parser.parse_args(argv)
    args.seeds = args.seeds or (2 if args.tiny else 5)
    args.cnn_seeds = args.cnn_seeds or (1 if args.tiny else 3)
    for name in ("seeds", "cnn_seeds"):
        if getattr(args, name) < 1:
            parser.error(
                f"--{name.replace('_', '-')}: invalid value {getattr(args, name)}; "
                "must be a positive integer"
            )

    from pipeline.config import Activation

    activations = [a.name for a in Activation]
    common: list[str] = []
    setup = (
        f"Each MLP configuration is the seed's setup with only the activation changed: one "
        f"hidden Dense(512), RMSprop, 5 epochs, batch 128, all 60,000 training images, trained "
        f"with seeds 0 to {args.seeds - 1}. The CNN runs with its shipped defaults "
        f"(`model=cnn`), seeds 0 to {args.cnn_seeds - 1} (it takes about 4 minutes a run)."
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
    seeds = {label: args.seeds for label, _ in configs} | {"cnn-relu": args.cnn_seeds}
    args.out.mkdir(parents=True, exist_ok=True)
    from pipeline.tracking.store import tracking_uri

    uri = tracking_uri(Path.cwd())
    if args.report_only:
        batch = last_batch(uri)
    else:
        batch = uuid.uuid4().hex
        work = args.out if args.tiny else ROOT / "outputs" / "benchmarks"
        run_all(configs, seeds, Path.cwd(), work, batch)
    write_results(grouped(uri, batch), args.out, setup)
    print(f"wrote {args.out / 'results.md'} and {args.out / 'results.png'}")


if __name__ == "__main__":
    sys.exit(main())
