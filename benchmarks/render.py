"""benchmarks.md from the measurements bench.py wrote to benchmarks.json, and nothing else."""

from __future__ import annotations

import statistics

SIDES = ("seed", "pipeline", "train stage")


def gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB"


def growth_per_job(peaks: list[float], settled: int) -> float:
    """MB the process's peak grew per job, from job `settled` to the last."""
    return (peaks[-1] - peaks[settled - 1]) / (len(peaks) - settled)


def side_rows(m: dict) -> list[str]:
    seed, rows = m["sides"]["seed"], []
    for side in SIDES:
        s = m["sides"][side]
        rows.append(
            f"| {side} | {s['fit']:.2f} | {s['samples_per_second']:,.0f} | "
            f"{s['fit'] / m['floor_seconds']:.1f}x | {s['process']:.1f} | {gb(s['peak'])} | "
            f"{s['test_accuracy']:.4f} | {seed['fit'] / s['fit']:.2f}x | "
            f"{s['process'] / seed['process']:.2f} | {s['peak'] / seed['peak']:.2f} |"
        )
    return rows


def round_rows(m: dict) -> list[str]:
    rows = []
    for i in range(m["repeats"]):
        cells = [m["rounds"][side][i] for side in SIDES]
        times = [f"{c['fit_seconds']:.2f} / {c['process']:.1f}" for c in cells]
        cold = m["colds"][i]
        rows.append(
            f"| {i + 1} | " + " | ".join(times) + f" | {cold:.1f} "
            f"({cold / cells[0]['process']:.2f}x the seed's) |"
        )
    return rows


def targets(m: dict) -> list[tuple[str, str, str, bool]]:
    """(measure, measured, target, met) for each target."""
    seed, pipe, stage = (m["sides"][side] for side in SIDES)
    speed = seed["fit"] / pipe["training"]
    memory = stage["peak"] / seed["peak"]
    accuracy = pipe["test_accuracy"] - seed["test_accuracy"]
    return [
        (
            "training throughput (`fit` less its per-epoch scoring), pipeline / seed",
            f"{speed:.2f}x",
            ">= 1.5x",
            speed >= 1.5,
        ),
        (
            "`python -m pipeline.train` end to end / seed's whole script",
            f"{pipe['process'] / seed['process']:.2f}",
            "<= 1.00",
            pipe["process"] <= seed["process"],
        ),
        (
            "cold `dvc repro` / seed's whole script",
            f"{m['cold'] / seed['process']:.2f}",
            "<= 1.50",
            m["cold"] <= 1.5 * seed["process"],
        ),
        ("`dvc repro`, nothing changed", f"{m['noop']:.2f} s", "< 3 s", m["noop"] < 3),
        ("preprocess stage", f"{m['preprocess']:.2f} s", "< 3 s", m["preprocess"] < 3),
        (
            "train stage peak memory / seed's",
            f"{gb(stage['peak'])} / {gb(seed['peak'])} = {memory:.2f}x",
            "<= 0.90x",
            memory <= 0.9,
        ),
        (
            "test accuracy, pipeline - seed",
            f"{accuracy:+.4f}",
            "within 0.003",
            abs(accuracy) <= 0.003,
        ),
        *sweep_targets(m),
    ]


def sweep_targets(m: dict) -> list[tuple[str, str, str, bool]]:
    pipe, sweep, settled, long_sweep = (
        m["sides"]["pipeline"],
        m["sweep"],
        m["settled"],
        m["long_sweep"],
    )
    beyond_fit = (sweep["seconds"] - sum(sweep["fits"])) / sweep["jobs"]
    alone = pipe["process"] - pipe["fit"]  # one run's own cost beyond its `fit`
    # The first job also pays the process's first imports: the later ones are a study's cost.
    steady = statistics.median(sweep["overheads"][1:])
    growth = growth_per_job(long_sweep, settled)
    return [
        (
            f"sweep of {sweep['jobs']} jobs in one `-m`: seconds per job beyond its `fit`",
            f"{beyond_fit:.1f} s",
            f"< {alone:.1f} s (a run in a process of its own)",
            beyond_fit < alone,
        ),
        (
            "sweep: each job after the first, beyond its `fit` and final scoring (median)",
            f"{steady:.1f} s",
            "<= 3 s",
            steady <= 3,
        ),
        (
            f"sweep of {len(long_sweep)} small jobs in one process: peak memory growth per "
            f"job after the first {settled}",
            f"{growth:.1f} MB",
            "<= 5 MB",
            growth <= 5,
        ),
        *search_targets(m),
    ]


def search_targets(m: dict) -> list[tuple[str, str, str, bool]]:
    """The search's per-trial cost beyond its training (none in a JSON from before it)."""
    if "search" not in m:
        return []
    search = m["search"]
    # The first trial also pays the process's first imports and the study's creation.
    steady = statistics.median(search["overheads"][1:])
    return [
        (
            f"search of {search['trials']} small trials in one process: each trial after "
            "the first, beyond its `fit` (median)",
            f"{steady:.1f} s",
            "<= 2 s",
            steady <= 2,
        )
    ]


def search_text(m: dict) -> str:
    if "search" not in m:
        return ""
    search = m["search"]
    # Measured on its own (bench.py --search-only), on a day of its own.
    when = f"; measured on {search['date']}" if "date" in search else ""
    return (
        f" The search (`+search=mlp`, {search['trials']} trials of 2,000 images, 1 epoch, "
        f"64 hidden units, no final runs{when}) took {search['seconds']:.1f} s in all; "
        "each trial's cost beyond "
        "its `fit` (its final scoring and evaluation, its MLflow run, Optuna's ask, report "
        "and tell), from its start to the next trial's: "
        f"{', '.join(f'{c:.1f}' for c in search['overheads'])} s."
    )


def header(m: dict) -> list[str]:
    return [
        "# Benchmarks: the pipeline against the seed's Keras loop",
        "",
        f"Measured by `python benchmarks/bench.py` ({m['mode']}) on {m['date']}.",
        "",
        f"- Machine: {m['machine']}",
        *([f"- Trained on: {m['device']}"] if "device" in m else []),  # older files lack it
        f"- Versions: {m['versions']}",
        f"- Training: {m['samples']:,} images, {m['epochs']} epoch(s), batch {m['batch']}; each "
        f"side ran {m['repeats']} time(s), alternately, each time in a new process; the "
        "table gives medians (peak memory: the largest).",
        f"- Data for the cold `dvc repro`: downloaded from {m['source']}.",
        "",
        "| side | fit s | samples/s | fit / floor | process s | peak RSS | test acc "
        "| fit speed vs seed | process vs seed | memory vs seed |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *side_rows(m),
        "",
        "Each round (`fit` seconds / whole-process seconds; a cold `dvc repro`, seconds):",
        "",
        "| round | " + " | ".join(SIDES) + " | cold `dvc repro` |",
        "|---|" + "---|" * (len(SIDES) + 1),
        *round_rows(m),
        "",
    ]


def sides_and_floor(m: dict) -> list[str]:
    pipe, stage = m["sides"]["pipeline"], m["sides"]["train stage"]
    return [
        "- seed: benchmarks/seed.py, the original script (its `fit` and `evaluate`).",
        "- pipeline: `python -m pipeline.train`, from process start to a logged, evaluated "
        "MLflow run (Hydra config, training with 10,000 training images and the test set "
        "scored after every epoch, model and plots saved and logged, evaluation reports).",
        "- train stage: `python -m pipeline.fit`, as `dvc repro` runs it.",
        "- fit s: `fit` alone. The pipeline's includes its per-epoch scoring of 10,000 "
        "training images and the test set (the gap per epoch), which the seed does not do: "
        f"{pipe['epoch_scoring']:.2f} s of the pipeline's median `fit` (train stage: "
        f"{stage['epoch_scoring']:.2f} s). The training-throughput target compares the "
        "training alone.",
        "",
        "## Arithmetic floor",
        "",
        f"Training the seed's network is {m['flops'] / 1e12:.3f} TFLOP (forward product and "
        "weight gradient of both Dense layers, input gradient of the second). NumPy's "
        f"float32 matrix product ran at {m['rate'] / 1e9:.1f} GFLOP/s at the seed's shapes "
        f"here, so `fit` cannot take less than about {m['floor_seconds']:.2f} s; "
        "`fit / floor` above is how far each side is from it.",
        "",
    ]


def against_targets(m: dict) -> list[str]:
    verdict = {True: "met", False: "MISSED"} if m["verdicts"] else {True: "-", False: "-"}
    sweep, settled, long_sweep = m["sweep"], m["settled"], m["long_sweep"]
    seed, stage = m["sides"]["seed"], m["sides"]["train stage"]
    return [
        "## Against the targets",
        "",
        *([] if m["verdicts"] else ["A quick check (--tiny): the targets are for full runs.", ""]),
        "| measure | measured | target | |",
        "|---|---|---|---|",
        *(f"| {n} | {value} | {t} | {verdict[ok]} |" for n, value, t, ok in targets(m)),
        "",
        "Cold `dvc repro` (a fresh clone's state: download, preprocess, train, evaluate, "
        f"and a new tracking store): median {m['cold']:.1f} s. `dvc repro` with nothing "
        f"changed: median {m['noop']:.2f} s. Preprocess alone: median {m['preprocess']:.2f} s. "
        f"The train stage's peak memory, {gb(stage['peak'])}, is "
        f"{stage['peak'] / seed['peak']:.2f}x the seed's {gb(seed['peak'])}, measured in "
        f"the same rounds. The sweep of {sweep['jobs']} jobs took {sweep['seconds']:.1f} s in "
        f"all, of which its jobs' `fit` took {sum(sweep['fits']):.1f} s; each job's cost "
        "beyond its `fit` and final scoring, from its start to the next job's: "
        f"{', '.join(f'{c:.1f}' for c in sweep['overheads'])} s (the first job pays the "
        "process's first imports of Keras, MLflow's model flavor and matplotlib). "
        f"The sweep of {len(long_sweep)} small jobs (2,000 images, 1 epoch, 64 hidden "
        f"units each) in one process: its peak memory was {long_sweep[0]:.0f} MB after "
        f"job 1, {long_sweep[settled - 1]:.0f} MB after job {settled} and "
        f"{long_sweep[-1]:.0f} MB after job {len(long_sweep)} (each job starts from a "
        "cleared Keras session)." + search_text(m),
        "",
    ]


def report(m: dict) -> str:
    """The measurements `m` (benchmarks.json) as markdown."""
    return "\n".join([*header(m), *sides_and_floor(m), *against_targets(m)])
