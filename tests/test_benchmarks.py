"""The benchmark scripts keep working: each runs in its tiny mode on real data."""

from __future__ import annotations

import json

import pytest
from conftest import ROOT, python

# Runs the benchmark and trains on the full data.
pytestmark = pytest.mark.slow


def test_activations_benchmark_writes_its_table_and_plot(make_project) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    out = paths.root / "docs"
    python(paths.root, str(ROOT / "benchmarks" / "activations.py"), "--tiny", "--out", str(out))
    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| mlp-") or "| cnn-" in line]
    assert sorted(r.split("|")[1].strip() for r in rows) == [
        "cnn-relu",
        "mlp-elu",
        "mlp-maxout",
        "mlp-relu",
    ]
    for row in rows:
        # Grouped over seeds: 2 per MLP (mean ± std, an interval), 1 for the CNN (no interval).
        cells = [c.strip() for c in row.split("|")[1:12]]
        label, n, train, test, interval, gap, diff, p, versus, seeds, seconds = cells
        assert int(n) == (1 if label == "cnn-relu" else 2)
        train, test, gap = (float(c.split(" ± ")[0]) for c in (train, test, gap))
        assert 0.1 < test <= 1 and abs(gap - (train - test)) < 2e-4
        low, high = (float(x) for x in interval.split(" - ")) if n == "2" else (test, test)
        assert low <= test <= high and float(seconds) > 0
        assert versus in {"**best**", "tie", "worse"} if n == "2" else versus == "**best**"
        if versus in {"tie", "worse"}:  # Welch's interval of best - this, Holm's p
            assert diff.startswith("+") and " to " in diff and 0 <= float(p.lstrip("<")) <= 1
        # A tie says how many seeds would tell it; the others need none.
        assert (seeds != "-") == (versus == "tie")
    mlp = [r.split("|")[9].strip() for r in rows if "| mlp-" in r]
    assert mlp.count("**best**") == 1  # one best MLP, whatever the CNN scored
    assert "reports them. Configurations ranked on the test set" in table
    assert "With 2 seeds per configuration, differences below" in table
    assert "cores; Python" in table  # the machine the numbers came from
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.benchmark = 'activations'"
    )
    assert len(runs) >= 7  # 3 activations x 2 seeds, and the CNN once


def test_performance_benchmark_measures_both_sides(tmp_path, mnist_dir) -> None:
    """bench.py --tiny: every measurement is taken and reported (no timing is asserted)."""
    out = tmp_path / "docs"
    env = {"MNIST_MIRROR": str(mnist_dir)}
    python(ROOT, str(ROOT / "benchmarks" / "bench.py"), "--tiny", "--out", str(out), env=env)
    table = (out / "benchmarks.md").read_text()
    rows = {
        cells[0]: cells[1:]
        for line in table.splitlines()
        if line.startswith("| ") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    for side in ("seed", "pipeline", "train stage"):
        fit, samples_per_s, _, process, peak, accuracy = rows[side][:6]
        assert 0 < float(fit) < float(process)  # fit is part of the whole process
        assert float(samples_per_s.replace(",", "")) > 0
        assert 0.3 < float(peak.removesuffix(" GB")) < 4
        assert 0.5 < float(accuracy) <= 1  # 2,000 images, one epoch: well above chance
    assert rows["seed"][6:] == ["1.00x", "1.00", "1.00"]  # the ratios are against the seed
    assert "GFLOP/s at the seed's shapes" in table and "cores" in table
    assert "- Trained on: CPU:0 (TensorFlow sees no GPU)" in table  # this machine has none
    assert rows["`dvc repro`, nothing changed"][0].endswith(" s")
    assert any(name.startswith("sweep of 4 jobs") for name in rows)  # --tiny: one sweep
    # Each job after the first, beyond its fit and scoring: measured from the jobs' starts.
    (steady,) = [cells for name, cells in rows.items() if name.startswith("sweep: each job")]
    assert 0 < float(steady[0].removesuffix(" s")) < 30 and steady[1] == "<= 3 s"
    # The long sweep's memory, from each job's logged peak (4 jobs in the tiny mode).
    (growth,) = [cells for name, cells in rows.items() if name.startswith("sweep of 4 small")]
    assert growth[0].endswith(" MB") and float(growth[0].removesuffix(" MB")) < 100
    # A search of 3 small trials in one process: each trial after the first, beyond its fit.
    (search,) = [cells for name, cells in rows.items() if name.startswith("search of 3 small")]
    assert 0 < float(search[0].removesuffix(" s")) < 30 and search[1] == "<= 2 s"
    assert "The search (`+search=mlp`, 3 trials of 2,000 images" in table
    # The memory target: the train stage's peak as a ratio to the seed's, both in GB.
    (memory,) = [cells for name, cells in rows.items() if name.startswith("train stage peak")]
    assert memory[0].endswith("x") and " GB / " in memory[0] and memory[1] == "<= 0.90x"
    # The markdown comes from benchmarks.json alone: a changed JSON renders without measuring.
    data = json.loads((out / "benchmarks.json").read_text())
    data["date"] = "the day the JSON was edited"
    (out / "benchmarks.json").write_text(json.dumps(data))
    (out / "benchmarks.md").unlink()
    python(ROOT, str(ROOT / "benchmarks" / "bench.py"), "--render-only", "--out", str(out))
    rendered = (out / "benchmarks.md").read_text()
    assert rendered == table.replace(table.split(" on ", 1)[1].split(".\n", 1)[0], data["date"])
