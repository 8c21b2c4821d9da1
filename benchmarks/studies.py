"""The overfitting studies of conf/experiment/, run on the real data and reported.

Runs each preset as a user would (`python -m pipeline.train -m +experiment=<name>`, one
process, timed), then reads the sweep back from MLflow and writes, under --out (default
docs/overfitting/): `<name>.png` and `<name>.csv` (the study plot and table its sweep's parent
run has; the selection study: its report and `selection.csv`) and `summary.md`, every
configuration's numbers (mean ± std over its seeds), each study's wall time, the machine and
the date. docs/overfitting.md explains them.

    python benchmarks/studies.py                  # all five (about 35 minutes on 2 cores)
    python benchmarks/studies.py --only width     # one of them
    python benchmarks/studies.py --report-only    # report on the last sweep of each study
    python benchmarks/studies.py --tiny --out /tmp/studies   # a quick check of the script
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDIES = ("epochs", "width", "data_size", "label_noise", "selection")
# Tiny mode: 2 epochs on 2,000 images, two values of each study's key, two seeds.
TINY = ["data.train_samples=2000", "data.test_samples=500", "epochs=2", "seed=0,1"]
TINY_SWEEPS = {
    "epochs": [],
    "width": ["model.hidden_units=[8],[32]"],
    "data_size": ["data.fit_samples=200,800"],
    "label_noise": ["data.label_noise=0.0,0.5"],
    "selection": [
        "model.hidden_units=[8],[32]",
        "activation=relu",
        "model.dropout=0.0",
        "optimizer.learning_rate=0.001",
    ],  # fmt: skip
}


def run_study(name: str, tiny: bool) -> float:
    """Run the preset's sweep in a process of its own; its wall-clock seconds."""
    args = [sys.executable, "-m", "pipeline.train", "-m", f"+experiment={name}"]
    if tiny:
        args += [*TINY, *TINY_SWEEPS[name]]
    print(f"study {name}: {' '.join(args[1:])}", flush=True)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def last_sweep(uri: str, name: str) -> tuple[object, list]:
    """The study's last finished sweep in the store at `uri`: its parent run and its child
    runs."""
    from pipeline.tracking.search import child_runs, search_runs

    parents = search_runs(
        uri, f"mnist-study-{name}",
        "tags.sweep = 'parent' and attributes.status = 'FINISHED'", ["start_time DESC"], 1,
    )  # fmt: skip
    if not parents:
        sys.exit(f"error: no finished sweep of study {name!r}; run it first")
    return parents[0], child_runs(uri, parents[0].info.run_id)


def selection_report(uri: str, out: Path) -> str:
    """The selection study's report and table as its sweep's parent run (in the store at
    `uri`) has them: `selection.csv` under `out`, and its section of summary.md."""
    from pipeline.tracking.search import download_artifact

    parent, children = last_sweep(uri, "selection")
    tmp = out / ".selection"
    report = download_artifact(uri, parent.info.run_id, "compare/selection.md", tmp)
    table = download_artifact(uri, parent.info.run_id, "compare/selection.csv", tmp)
    shutil.move(table, out / "selection.csv")
    text = report.read_text().split("\n", 1)[1]  # without its title
    shutil.rmtree(tmp)
    minutes = (parent.info.end_time - parent.info.start_time) / 60_000
    return (
        "## selection\n\n`python -m pipeline.train -m +experiment=selection`: "
        f"{len(children)} runs in {minutes:.1f} minutes (sweep run {parent.info.run_id}).\n"
        f"{text}"
    )


def report(uri: str, name: str, out: Path) -> str:
    """Write the study's plot and table (of its last sweep in the store at `uri`) under `out`;
    return its section of summary.md."""
    from pipeline import compare, stats, study
    from pipeline.replicates import plus_minus

    if name == "selection":
        return selection_report(uri, out)
    parent, children = last_sweep(uri, name)
    x = children[0].data.params["study.x"]
    groups = compare.group_rows(compare.rows_of(children))
    tmp = out / f".{name}"
    study.study_report(uri, groups, x, tmp, f"study {name}")
    shutil.move(tmp / "study.png", out / f"{name}.png")
    shutil.move(tmp / "study.csv", out / f"{name}.csv")
    shutil.rmtree(tmp)
    minutes = (parent.info.end_time - parent.info.start_time) / 60_000
    metrics = {c.info.run_id: c.data.metrics for c in children}
    lines = [
        f"## {name}",
        "",
        f"`python -m pipeline.train -m +experiment={name}`: {len(children)} runs in "
        f"{minutes:.1f} minutes (sweep run {parent.info.run_id}).",
        "",
        "| configuration | n | train accuracy | test accuracy | gap (train - test) "
        "| train accuracy, true labels | best epoch | test loss rise after it |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]

    def pm(values: list[float], digits: int = 4) -> str:
        s = stats.summary(values)
        return plus_minus(s.mean, s.std, digits)

    if x != "epoch":  # in order of the swept value: "[16]" (hidden units) is 16
        groups.sort(key=lambda g: float(g["params"][x].strip("[]")))
    for g in groups:
        runs = [metrics[r] for r in g["run_ids"]]
        # Without label noise the labels fitted on are the true ones.
        clean = [m.get("train_clean_accuracy", m["train_accuracy"]) for m in runs]
        clean = clean if x == "data.label_noise" else []
        lines.append(
            f"| {g['config']} | {g['n']} | {pm([m['train_accuracy'] for m in runs])} "
            f"| {pm([m['test_accuracy'] for m in runs])} "
            f"| {pm([m['generalization_gap'] for m in runs])} "
            f"| {pm(clean) if clean else '-'} | {pm([m['best_epoch'] for m in runs], 1)} "
            f"| {pm([m['heldout_loss_rise'] for m in runs])} |"
        )
    lines += ["", f"![study {name}]({name}.png)", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "overfitting")
    parser.add_argument("--only", choices=STUDIES, action="append", help="this study only")
    parser.add_argument("--report-only", action="store_true", help="report on the last sweeps")
    parser.add_argument("--tiny", action="store_true", help="2 epochs on 2,000 images, 2 seeds")
    args = parser.parse_args(argv)
    names = args.only or list(STUDIES)
    if not args.report_only:
        for name in names:
            print(f"study {name}: {run_study(name, args.tiny):.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    import tensorflow as tf

    header = [
        "# The overfitting studies: measured numbers",
        "",
        f"Written by `benchmarks/studies.py` on {datetime.date.today().isoformat()} from the "
        f"last sweep of each study, on a {platform.machine()} machine with {os.cpu_count()} "
        f"cores; Python {platform.python_version()}, TensorFlow {tf.__version__}. Mean ± "
        "standard deviation over each configuration's seeds. docs/overfitting.md says what "
        "they show.",
        "",
    ]
    from pipeline.tracking.store import tracking_uri

    uri = tracking_uri(Path.cwd())
    sections = [report(uri, name, args.out) for name in names]
    (args.out / "summary.md").write_text("\n".join(header + sections))
    print(f"wrote {args.out}/summary.md and each study's .png and .csv")


if __name__ == "__main__":
    main()
