"""The selection study (`python -m pipeline.train -m +experiment=selection`): how optimistic
a test score is when the test set chose the winner.

Every configuration of the sweep is scored on its validation rows and on the two halves of the
test set (half A, half B: pipeline.predictions.test_halves). The winner is picked two ways: by
half A, as a user with `val_split=0` picks on the test set, and by validation accuracy. Each
pick is then scored on half B, which played no part in choosing it. The test-chosen score's
optimism is its half-A score less its half-B score: Welch's test over the pick's images (1
right, 0 wrong) says whether that is more than chance. The selection is also repeated over
many random splits of the test set into halves, for the optimism on average.

The per-image scores come from each job's saved test predictions (no second inference); the
sweep's parent run gets the report (pipeline.sweep).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import predictions, stats
from pipeline.config import SELECTION_STUDY
from pipeline.data.prepared import load_prepared, read_meta, split_digest
from pipeline.errors import DataError
from pipeline.io import write_text
from pipeline.paths import Paths
from pipeline.tracking.search import record_on_run

STUDY = SELECTION_STUDY  # the preset's `study.name`
# Random splits of the test set into two halves, each a selection repeated.
SPLITS = 1000


def _test_labels(root: Path, dataset: str) -> tuple[np.ndarray, str]:
    """The prepared test set's true classes, and its data digest."""
    paths = Paths.project(root, dataset)
    _, y = load_prepared(paths, "test")
    return np.asarray(y).argmax(axis=1), split_digest(read_meta(paths), "test", 0, len(y))


def _correct(run: Any, sweep_dir: Path, truth: np.ndarray, digest: str) -> np.ndarray:
    """Per test image, whether the run's model got it right: from the predictions its job
    saved, once they are known to be this run's, on this test set.

    Raises:
        DataError: the job's predictions are missing or belong to another run or data.
    """
    job = sweep_dir / run.data.tags.get("sweep_job", "?")
    path = Paths(root=job, out=job).predictions
    probs = predictions.load(path)
    if probs["run_id"] != run.info.run_id or probs.get("test_digest") != digest:
        raise DataError(f"{path} holds no test predictions of run {run.info.run_id}")
    return probs["test"].argmax(axis=1) == truth


def configurations(
    groups: list[dict[str, Any]], runs: list[Any], sweep_dir: Path, root: Path, dataset: str
) -> list[dict[str, Any]]:
    """Per configuration (a group of `replicates.group_rows`): its label, validation accuracy
    (mean over its runs) and `correct`, per test image the fraction of its runs right."""
    truth, digest = _test_labels(root, dataset)
    by_id = {run.info.run_id: run for run in runs}
    configs = []
    for group in groups:
        correct = [_correct(by_id[i], sweep_dir, truth, digest) for i in group["run_ids"]]
        configs.append(
            {
                "config": group["config"],
                "n": group["n"],
                "val": group["val_accuracy_mean"],
                "correct": np.mean(correct, axis=0),
            }
        )
    return configs


def picks(correct: np.ndarray, val: np.ndarray, a: np.ndarray) -> tuple[int, int]:
    """The configuration (row of `correct`) with the best score on the rows `a`, and the one
    with the best validation accuracy (the first of equals)."""
    return int(correct[:, a].mean(axis=1).argmax()), int(val.argmax())


def resampled(correct: np.ndarray, val: np.ndarray, splits: int = SPLITS) -> np.ndarray:
    """The selection repeated over `splits` random splits of the test set into halves: per
    split, half A less half B of the winner on half A, and of the winner on validation."""
    rng = np.random.default_rng(0)
    n = correct.shape[1]
    out = np.empty((splits, 2))
    for i in range(splits):
        order = rng.permutation(n)
        a, b = order[: (n + 1) // 2], order[(n + 1) // 2 :]
        for j, pick in enumerate(picks(correct, val, a)):
            out[i, j] = correct[pick, a].mean() - correct[pick, b].mean()
    return out


def measure(configs: list[dict[str, Any]], splits: int = SPLITS) -> dict[str, Any]:
    """The two picks on the fixed halves, the Welch test of each pick's half A against its
    half B, and the repeated selections."""
    correct = np.stack([c["correct"] for c in configs])
    val = np.array([c["val"] for c in configs])
    a, b = predictions.test_halves(correct.shape[1])
    by_test, by_val = picks(correct, val, a)
    found: dict[str, Any] = {"a": correct[:, a].mean(axis=1), "b": correct[:, b].mean(axis=1)}
    found.update(val=val, by_test=by_test, by_val=by_val, images=(len(a), len(b)))
    found["welch"] = [stats.welch(correct[p, a], correct[p, b]) for p in (by_test, by_val)]
    found["repeated"] = resampled(correct, val, splits)
    return found


def _pct(x: float, signed: bool = False) -> str:
    return f"{x * 100:{'+' if signed else ''}.2f}%"


def _interval(w: stats.Welch) -> str:
    p = "p < 0.001" if w.p < 0.001 else f"p = {w.p:.3f}"
    return f"95% interval {_pct(w.ci_low, True)} to {_pct(w.ci_high, True)}, {p}"


def _spread(values: np.ndarray) -> str:
    low, high = np.percentile(values, [2.5, 97.5])
    return (
        f"{_pct(values.mean(), True)} on average (in 95% of the splits between "
        f"{_pct(low, True)} and {_pct(high, True)}; above 0 in {(values > 0).mean():.0%})"
    )


def summary_lines(configs: list[dict[str, Any]], m: dict[str, Any]) -> list[str]:
    """The study's findings in plain words, a bullet each."""
    t, v = m["by_test"], m["by_val"]
    welch_t, welch_v = m["welch"]
    n_a, n_b = m["images"]
    same = "the same configuration"
    return [
        f"- Chosen on test half A, as a user with val_split=0 would: {configs[t]['config']}. "
        f"It scores {_pct(m['a'][t])} on half A, the score such a user reports, and "
        f"{_pct(m['b'][t])} on half B, which played no part in choosing it: an optimism of "
        f"{_pct(welch_t.diff, True)} ({_interval(welch_t)}; Welch's t-test over its "
        f"{n_a:,} + {n_b:,} images, each 1 if right, 0 if wrong).",
        f"- Chosen on validation: {same if t == v else configs[v]['config']} (validation "
        f"{_pct(m['val'][v])}). Half A {_pct(m['a'][v])}, half B {_pct(m['b'][v])}: a "
        f"difference of {_pct(welch_v.diff, True)} ({_interval(welch_v)}); validation chose "
        "it, so this much the halves differ by chance alone.",
        f"- On half B, which neither pick saw: chosen on test {_pct(m['b'][t])}, chosen on "
        f"validation {_pct(m['b'][v])}.",
        f"- The selection repeated over {len(m['repeated']):,} random splits of the test set "
        f"into two halves: the winner on one half scores {_spread(m['repeated'][:, 0])} more "
        "there than on the other half; the validation winner "
        f"{_spread(m['repeated'][:, 1])}.",
    ]


def _table(configs: list[dict[str, Any]], m: dict[str, Any]) -> pd.DataFrame:
    picked = {m["by_test"]: "test half A", m["by_val"]: "validation"}
    if m["by_test"] == m["by_val"]:
        picked[m["by_test"]] = "both"
    rows = [
        {"config": c["config"], "n": c["n"], "val_accuracy": m["val"][i],
         "test_a_accuracy": m["a"][i], "test_b_accuracy": m["b"][i],
         "picked_by": picked.get(i, "")}
        for i, c in enumerate(configs)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def parent_metrics(m: dict[str, Any]) -> dict[str, float]:
    """What the parent run gets as metrics: each pick's scores, the optimism and its test."""
    t, v = m["by_test"], m["by_val"]
    welch_t, welch_v = m["welch"]
    low, high = np.percentile(m["repeated"][:, 0], [2.5, 97.5])
    metrics = {
        "test_pick_val_accuracy": m["val"][t], "test_pick_test_a_accuracy": m["a"][t],
        "test_pick_test_b_accuracy": m["b"][t], "val_pick_val_accuracy": m["val"][v],
        "val_pick_test_a_accuracy": m["a"][v], "val_pick_test_b_accuracy": m["b"][v],
        "optimism": welch_t.diff, "optimism_ci_low": welch_t.ci_low,
        "optimism_ci_high": welch_t.ci_high, "optimism_p": welch_t.p,
        "val_pick_difference": welch_v.diff, "val_pick_difference_p": welch_v.p,
        "optimism_repeated_mean": m["repeated"][:, 0].mean(),
        "optimism_repeated_low": low, "optimism_repeated_high": high,
        "val_pick_difference_repeated_mean": m["repeated"][:, 1].mean(),
    }  # fmt: skip
    return {k: float(x) for k, x in metrics.items() if not math.isnan(x)}


def report(
    uri: str,
    groups: list[dict[str, Any]],
    runs: list[Any],
    sweep_dir: Path,
    run_id: str,
    dataset: str,
) -> list[Path]:
    """Measure the study, print its findings, record them on the parent run `run_id` (in the
    store at `uri`); return selection.md and selection.csv (under the sweep's compare/) for
    its artifacts."""
    root, out = Path.cwd(), sweep_dir / "compare"
    configs = configurations(groups, runs, sweep_dir, root, dataset)
    m = measure(configs)
    lines = summary_lines(configs, m)
    table = _table(configs, m)
    title = f"# The selection study: {len(configs)} configurations"
    text = "\n\n".join([title, "\n".join(lines), table.to_markdown(index=False, floatfmt=".4f")])
    write_text(out / "selection.md", text + "\n")
    write_text(out / "selection.csv", table.to_csv(index=False, lineterminator="\n"))
    tags = {"selection.test_pick": configs[m["by_test"]]["config"],
            "selection.val_pick": configs[m["by_val"]]["config"]}  # fmt: skip
    record_on_run(uri, run_id, metrics=parent_metrics(m), tags=tags)
    print("\n".join(lines))
    return [out / "selection.md", out / "selection.csv"]
