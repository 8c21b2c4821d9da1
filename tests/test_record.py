"""The run record (models/run.json) as a typed record: the file keeps its keys and their
order, its dataset splits are written as lists, and one cut off or missing fails in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ModelError
from pipeline.record import DatasetSplit, RunRecord

KEYS = [
    "run_id",
    "run_name",
    "model_sha256",
    "tracking_uri",
    "experiment",
    "tags",
    "params",
    "datasets",
    "metrics",
    "model",
    "config",
    "model_summary",
]


def record() -> RunRecord:
    split = DatasetSplit("mnist-train", "training", "abc", (60, 784), (60, 10))
    return RunRecord(
        run_id="r1",
        run_name="relu-1",
        model_sha256="0" * 64,
        tracking_uri="file:///m",
        experiment="mnist",
        tags={"heldout": "test"},
        params={"epochs": 1},
        datasets={"source": "https://example.invalid", "splits": [split]},
        metrics={"fit_seconds": 1.5, "best_epoch": 1},
        model={"pixels": 784},
        config="epochs: 1\n",
        model_summary="Model\n",
    )


def test_the_file_keeps_its_keys_and_splits_read_back_as_lists(tmp_path: Path) -> None:
    path = tmp_path / "run.json"
    record().save(path)
    data = json.loads(path.read_text())
    assert list(data) == KEYS
    assert data["datasets"]["splits"] == [["mnist-train", "training", "abc", [60, 784], [60, 10]]]
    loaded = RunRecord.load(path)
    assert loaded.to_dict() == data
    name, context, digest, x_shape, y_shape = loaded.datasets["splits"][0]  # as tracking reads
    assert (name, x_shape[0], y_shape[1:]) == ("mnist-train", 60, [10])


@pytest.mark.parametrize("content", [None, "", '{"run_id": "r1", "run_na', '{"run_id": "r1"}'])
def test_a_record_cut_off_or_missing_fails_in_one_line(tmp_path: Path, content) -> None:
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ModelError, match=r"^cannot read .*run\.json .*; re-run the train stage"):
        RunRecord.load(path)
