"""A trial's side of the search, in the trial's own job (this process, joblib's, a SLURM
node's): each epoch, its validation metric reported to the study and the pruner asked
whether to go on; at the end, what the job returns to the search.

The job finds its trial through the config alone: `search.study` and `search.storage` name
the study, `search.trial` the trial's number, so it works wherever the job runs.
"""

from __future__ import annotations

import math
from typing import Any

from omegaconf import DictConfig

from pipeline.callbacks import overfitting
from pipeline.search.study import running_trial

# The keys a trial's job adds to what it returns (pipeline.train), read by the search loop.
VALUE, STATE, EPOCHS = "search.value", "search.state", "search.epochs"


class TrialReporter:
    """Reports `val_<objective>` after each epoch to the study's trial `search.trial` and
    asks its pruner whether to stop; `pruned` once it said so."""

    def __init__(self, cfg: DictConfig) -> None:
        self.trial = running_trial(cfg)
        self.metric = cfg.search.objective  # as Keras logs it: val_accuracy, val_loss
        self.pruned = False
        self.epochs = 0

    def on_epoch_end(self, epoch: int, logs: dict) -> bool:
        """Report the epoch (from 1); True when the pruner says to stop the training."""
        self.epochs = epoch + 1
        value = float(logs.get(self.metric, math.nan))
        self.trial.report(value, step=epoch + 1)
        self.pruned = self.trial.should_prune()
        return self.pruned


def objective(history: dict[str, list[float]], metric: str) -> float:
    """`metric` (val_accuracy or val_loss) at the best epoch: the epoch of the lowest
    validation loss (`callbacks.overfitting`), whose weights early stopping keeps."""
    best = overfitting(history, "val")["best_epoch"]
    return history[metric][best - 1]


def outcome(reporter: TrialReporter, history: dict[str, list[float]]) -> dict[str, Any]:
    """What the trial's job returns to the search: its value, how it ended, its epochs."""
    return {
        VALUE: objective(history, reporter.metric),
        STATE: "PRUNED" if reporter.pruned else "COMPLETE",
        EPOCHS: len(history[reporter.metric]),
    }
