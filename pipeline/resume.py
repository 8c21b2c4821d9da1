"""Progress of unfinished trainings, for `train.resume=true`: each configuration's weights,
optimizer state and epoch (Keras' backup of its last completed epoch) and its MLflow run,
kept in `.resume/` until the run completes.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

from pipeline.io import write_json

# Where unfinished trainings keep their progress (weights, optimizer state, epoch, run id).
RESUME_DIR = ".resume"


@dataclass
class Progress:
    """One configuration's progress directory, locked for this process; `resumed` is the
    interrupted run this training continues, if any."""

    directory: Path
    lock: IO
    resumed: str | None

    @property
    def state(self) -> Path:
        """Keras' backup of the last completed epoch (`keras.callbacks.BackupAndRestore`)."""
        return self.directory / "state"

    def started(self, run_id: str) -> None:
        """Name the run the progress belongs to, so that a resume continues it."""
        write_json(self.directory / "run.json", {"run_id": run_id})

    def finish(self) -> None:
        """The run is complete: its progress is no longer needed."""
        shutil.rmtree(self.directory, ignore_errors=True)
        self.lock.close()


def claim(cfg: DictConfig, root: Path) -> Progress | None:
    """This configuration's progress under `root`: an interrupted run's to resume (with
    `train.resume`), or emptied to start afresh; None when another process holds it."""
    directory, lock = claim_progress(root / RESUME_DIR, digest(cfg))
    if directory is None:
        return None
    resumed = interrupted_run(directory) if cfg.train.resume else None
    if resumed is None:
        shutil.rmtree(directory, ignore_errors=True)  # start afresh
    return Progress(directory, lock, resumed)


def digest(cfg: DictConfig) -> str:
    """Names one configuration's progress: everything but `train.resume` itself."""
    plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    plain["train"].pop("resume")
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def claim_progress(base: Path, digest: str) -> tuple[Path | None, IO | None]:
    """This configuration's progress directory, locked for this process.

    Two trainings of one configuration at once (two sweeps, say) must not share it: the
    second gets none, and keeps no progress to resume. The lock ends with the process.
    """
    base.mkdir(parents=True, exist_ok=True)
    lock = open(base / f"{digest}.lock", "w")  # noqa: SIM115  (held for the whole training)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        print("another training of this configuration is running: this one cannot be resumed")
        return None, None
    return base / digest, lock


def interrupted_run(progress: Path) -> str | None:
    """The MLflow run of an interrupted training of this configuration, if one left progress."""
    if (progress / "run.json").is_file() and (progress / "state").is_dir():
        run_id = json.loads((progress / "run.json").read_text())["run_id"]
        # Keras' backup of the last completed epoch: its weights and its epoch number. An
        # interruption while they were written leaves them unreadable.
        metadata = progress / "state" / "training_metadata.json"
        try:
            json.loads(metadata.read_text())["epoch"]
        except (OSError, ValueError, KeyError):
            if (progress / "state" / "latest.weights.h5").is_file() or metadata.exists():
                print(
                    f"train.resume: the saved progress of MLflow run {run_id} was cut off "
                    "while it was written; starting afresh"
                )
                return None
        print(f"resuming MLflow run {run_id} from its last completed epoch")
        return run_id
    print("train.resume: no interrupted run of this configuration; starting afresh")
    return None
