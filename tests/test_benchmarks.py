"""The benchmark scripts keep working: each runs in its tiny mode on real data."""

from __future__ import annotations

from conftest import ROOT, python


def test_activations_benchmark_writes_its_table_and_plot(make_project) -> None:
    import mlflow

    paths, _ = make_project("data.train_samples=2000", "data.test_samples=500")
    out = paths.root / "docs"
    python(paths.root, str(ROOT / "benchmarks" / "activations.py"), "--tiny", "--out", str(out))
    table = (out / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| mlp-") or "| cnn-" in line]
    assert sorted(r.split("|")[1].strip() for r in rows) == [
        "cnn-relu", "mlp-elu", "mlp-maxout", "mlp-relu"
    ]  # fmt: skip
    for row in rows:
        train, test, gap = (float(c) for c in row.split("|")[2:5])
        assert 0.1 < test <= 1 and abs(gap - (train - test)) < 2e-4
    assert "cores; Python" in table  # the machine the numbers came from
    png = (out / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string="tags.benchmark = 'activations'"
    )
    assert len(runs) >= 4
