"""The pipeline against the seed's plain Keras loop, measured side by side in one run.

In a fresh git copy of the project (a temporary directory; nothing here is touched), on the
real MNIST files from `MNIST_MIRROR` (a directory is served over HTTP on 127.0.0.1, so the
download stage really downloads):

1. in rounds, `--repeats` of them, each command in a process of its own: a cold `dvc repro`
   (the copy as a fresh clone has it: no DVC cache, no outputs, no tracking store; so
   download, preprocess, train, evaluate), `dvc repro` again with nothing changed,
   `python -m pipeline.data.preprocess` on its own, then, alternately, the seed's script
   (benchmarks/seed.py), `python -m pipeline.train` (Hydra, train, evaluate, one MLflow
   run) and the DVC train stage (`python -m pipeline.fit`);
2. a sweep of several jobs in one `python -m pipeline.train -m` invocation;
3. a hyperparameter search of 10 small trials in one process (`+search=mlp`, no final
   runs): what each trial costs beyond its training;
4. the arithmetic floor: the seed model's training FLOPs over the rate NumPy's float32
   matrix product reaches on this machine at the seed's shapes.

It writes the measurements, with the machine, versions and date, to docs/benchmarks.json
(`--out` elsewhere), then renders docs/benchmarks.md from that file alone (benchmarks/render.py)
and prints it; `--render-only` renders again without measuring. Every number is measured here.

    make bench                                   # MNIST_MIRROR=... python benchmarks/bench.py
    python benchmarks/bench.py --tiny --out /tmp/bench   # a quick check that it works
    python benchmarks/bench.py --render-only             # docs/benchmarks.md from the JSON
    python benchmarks/bench.py --search-only   # the search alone, into the JSON's `search`
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's banner out of the table

import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from measure import (
    BATCH,
    job_overheads,
    machine,
    matmul_rate,
    run,
    run_metrics,
    sweep_fits,
    sweep_peaks,
    training_flops,
)
from render import SIDES, report

from mnist_support.project import make_repo, serve_directory

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "benchmarks" / "seed.py"
# What --tiny trains on: enough to run every step, quick enough for the test suite.
TINY = {"data.train_samples": 2000, "data.test_samples": 500, "epochs": 1}
SEED_TINY = ["--train-samples", "2000", "--test-samples", "500", "--epochs", "1"]
SMALL = ["data.train_samples=2000", "data.test_samples=500", "epochs=1", "model.hidden_units=[64]"]
GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}
# A long sweep's memory: its jobs beyond the first few must not grow the process (--tiny
# checks the measurement only: 4 jobs, settled after 2).
LONG_SWEEP, SETTLED, TINY_SETTLED = 40, 5, 2
# A search's trials (small: the cost around each one is measured, not its training).
SEARCH_TRIALS, SEARCH_TINY_TRIALS = 10, 3


@dataclass
class Bench:
    """Where one measurement runs: the git copy, its environment, and what is collected."""

    tiny: bool
    work: Path
    env: dict[str, str]
    source: str
    python: list[str] = field(default_factory=lambda: [sys.executable])
    rounds: dict[str, list[dict]] = field(default_factory=lambda: {s: [] for s in SIDES})
    colds: list[float] = field(default_factory=list)
    noops: list[float] = field(default_factory=list)
    preprocesses: list[float] = field(default_factory=list)
    uri: str = ""

    @property
    def repo(self) -> Path:
        return self.work / "repo"

    @property
    def settled(self) -> int:
        return TINY_SETTLED if self.tiny else SETTLED

    def run(self, *cmd: str):
        return run(list(cmd), self.repo, self.env)


def make_cold(repo: Path) -> None:
    """Put the copy back as a fresh clone has it: no DVC cache, outputs or tracking store."""
    for cmd in (["git", "clean", "-fdxq"], ["git", "checkout", "-q", "--", "."]):
        subprocess.run(cmd, cwd=repo, check=True, capture_output=True)


def measured_run(b: Bench, side: str, run_json: Path, *cmd: str) -> None:
    """Run a pipeline command and keep its logged run's numbers under `side`."""
    p = b.run(*b.python, *cmd)
    metrics = run_metrics(b.uri, run_json)
    b.rounds[side].append(
        {
            "fit_seconds": metrics["fit_seconds"],
            "test_accuracy": metrics["test_accuracy"],
            "scoring": metrics["epoch_scoring_seconds"],
            "process": p.seconds,
            "peak": p.peak_bytes,
        }
    )


def one_round(b: Bench, i: int) -> None:
    """Cold and no-op `dvc repro`, preprocess, then the seed, the pipeline, the train stage."""
    make_cold(b.repo)
    # A new store each round (MLflow keeps the last one's open in this process).
    b.env["MLFLOW_TRACKING_URI"] = b.uri = f"sqlite:///{b.work / f'mlflow-{i}.db'}"
    b.colds.append(b.run("dvc", "repro").seconds)
    b.noops.append(b.run("dvc", "repro").seconds)
    b.preprocesses.append(b.run(*b.python, "-m", "pipeline.data.preprocess").seconds)
    p = b.run(*b.python, str(SEED), "data/raw/mnist", *(SEED_TINY if b.tiny else []))
    seed = json.loads(p.output.strip().splitlines()[-1])
    b.rounds["seed"].append({**seed, "process": p.seconds, "peak": p.peak_bytes})
    out = b.work / "runs" / str(i)
    tiny = [f"{k}={v}" for k, v in TINY.items()] if b.tiny else []
    train = ["-m", "pipeline.train", f"hydra.run.dir={out}", *tiny]
    measured_run(b, "pipeline", out / "models" / "run.json", *train)
    measured_run(b, "train stage", b.repo / "models" / "run.json", "-m", "pipeline.fit")
    print(
        f"  cold dvc repro {b.colds[-1]:.1f} s; "
        + "; ".join(
            f"{side}: fit {r[-1]['fit_seconds']:.2f} s, process {r[-1]['process']:.1f} s"
            for side, r in b.rounds.items()
        ),
        flush=True,
    )


def sweeps(b: Bench) -> tuple[dict, list[float]]:
    """A sweep of several jobs in one `-m`, and a long sweep of small jobs for its memory."""
    long_jobs = b.settled + 2 if b.tiny else LONG_SWEEP
    long_dir = b.work / "long-sweep"
    if b.tiny:  # one sweep of small jobs serves both measurements
        jobs, sweep_dir, sweep_args = long_jobs, long_dir, SMALL
    else:
        jobs, sweep_dir, sweep_args = 5, b.work / "sweep", []
    print(f"a sweep of {jobs} jobs ...", flush=True)
    seeds = ",".join(str(s) for s in range(jobs))
    train = [*b.python, "-m", "pipeline.train", "-m"]
    p = b.run(*train, f"seed={seeds}", f"hydra.sweep.dir={sweep_dir}", *sweep_args)
    sweep = {
        "jobs": jobs,
        "seconds": p.seconds,
        "fits": sweep_fits(b.uri, sweep_dir),
        "overheads": job_overheads(sweep_dir),
    }
    if not b.tiny:
        print(f"a sweep of {long_jobs} small jobs in one process ...", flush=True)
        b.run(*train, f"seed=range({long_jobs})", f"hydra.sweep.dir={long_dir}", *SMALL)
    return sweep, sweep_peaks(b.uri, long_dir)


def search_trials(b: Bench) -> dict:
    """A search of small trials in one process, with the preset's pruner and sampler and no
    final runs: each trial's cost beyond its `fit`, from its start to the next one's."""
    trials = SEARCH_TINY_TRIALS if b.tiny else SEARCH_TRIALS
    print(f"a search of {trials} trials in one process ...", flush=True)
    sweep_dir = b.work / "search"
    p = b.run(
        *b.python, "-m", "pipeline.train", "+search=mlp", f"search.trials={trials}",
        "search.final_seeds=0", f"search.storage=sqlite:///{b.work / 'optuna.db'}",
        f"hydra.sweep.dir={sweep_dir}", *SMALL,
    )  # fmt: skip
    return {
        "trials": trials,
        "seconds": p.seconds,
        "overheads": job_overheads(sweep_dir, ("fit_seconds",)),
    }


def summary(runs: list[dict], samples: int, epochs: int) -> dict:
    """One side's medians over its rounds (peak memory: the largest)."""
    fit = statistics.median(r["fit_seconds"] for r in runs)
    return {
        "fit": fit,
        # Training alone: `fit` less the per-epoch scoring the seed's loop does not do.
        "training": statistics.median(r["fit_seconds"] - r.get("scoring", 0) for r in runs),
        "epoch_scoring": statistics.median(r.get("scoring", 0) for r in runs),
        "samples_per_second": samples * epochs / fit,
        "process": statistics.median(r["process"] for r in runs),
        "peak": max(r["peak"] for r in runs),
        "test_accuracy": statistics.median(r["test_accuracy"] for r in runs),
    }


def measurements(b: Bench, rate: float, sweep: dict, long_sweep: list[float], search: dict) -> dict:
    """Everything benchmarks.md is rendered from."""
    samples, epochs = (2000, 1) if b.tiny else (60000, 5)
    flops = training_flops(samples, epochs)
    return {
        **machine(),
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "mode": "--tiny" if b.tiny else "full data",
        "samples": samples,
        "epochs": epochs,
        "batch": BATCH,
        "repeats": len(b.colds),
        "sides": {side: summary(runs, samples, epochs) for side, runs in b.rounds.items()},
        "rounds": b.rounds,
        "rate": rate,
        "flops": flops,
        "floor_seconds": flops / rate,
        "cold": statistics.median(b.colds),
        "colds": b.colds,
        "noop": statistics.median(b.noops),
        "preprocess": statistics.median(b.preprocesses),
        "sweep": sweep,
        "long_sweep": long_sweep,
        "settled": b.settled,
        "search": search,
        "source": b.source,
        "verdicts": not b.tiny,
    }


def measure(tiny: bool, repeats: int, search_only: bool = False) -> dict:
    """Serve the mirror, copy the project, run the rounds, sweeps and search; the
    measurements (`search_only`: the search's alone, under `search`)."""
    # Where the cold `dvc repro` downloads from: MNIST_MIRROR (a directory is served over
    # HTTP here), else the official mirrors, as `make run` would.
    mirror, stop_serving = os.environ.get("MNIST_MIRROR", ""), None
    source = mirror or "the official mirrors"
    if mirror and Path(mirror).is_dir():
        mirror, stop_serving = serve_directory(Path(mirror))
        source = f"127.0.0.1 over HTTP (serving {os.environ['MNIST_MIRROR']})"
    bin_dir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        **GIT_ENV,
        **({"MNIST_MIRROR": mirror} if mirror else {}),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    b = Bench(tiny, Path(tempfile.mkdtemp(prefix="mnist-bench-")), env, source)
    try:
        # Full: params.yaml as committed (the seed's setup).
        make_repo(b.repo, env, "bench", TINY if tiny else {})
        if search_only:
            b.env["MLFLOW_TRACKING_URI"] = f"sqlite:///{b.work / 'mlflow.db'}"
            return {"search": search_trials(b)}
        print("measuring the matrix-product rate ...", flush=True)
        rate = matmul_rate(0.5 if tiny else 3.0)
        for i in range(repeats):
            print(f"round {i + 1} of {repeats}: cold dvc repro, seed, pipeline, train stage ...")
            one_round(b, i)
        sweep, long_sweep = sweeps(b)
        search = search_trials(b)
    finally:
        if stop_serving:
            stop_serving()
        shutil.rmtree(b.work, ignore_errors=True)
    return measurements(b, rate, sweep, long_sweep, search)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a quick check on 2,000 images")
    parser.add_argument("--repeats", type=int, help="runs of each side (default 5; tiny: 1)")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "docs", help="where benchmarks.json and .md go"
    )
    parser.add_argument(
        "--render-only", action="store_true", help="benchmarks.md from benchmarks.json alone"
    )
    parser.add_argument(
        "--search-only", action="store_true", help="the search alone, into benchmarks.json"
    )
    args = parser.parse_args()
    data = args.out / "benchmarks.json"
    if args.search_only:  # the other measurements stay as they were
        search = measure(args.tiny, 1, search_only=True)["search"]
        search["date"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        m = {**json.loads(data.read_text()), "search": search}
        data.write_text(json.dumps(m, indent=2) + "\n")
    elif not args.render_only:
        m = measure(args.tiny, args.repeats or (1 if args.tiny else 5))
        args.out.mkdir(parents=True, exist_ok=True)
        data.write_text(json.dumps(m, indent=2) + "\n")
    text = report(json.loads(data.read_text()))
    print(text)
    (args.out / "benchmarks.md").write_text(text)


if __name__ == "__main__":
    main()
