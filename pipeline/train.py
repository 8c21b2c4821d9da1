"""`python -m pipeline.train [overrides]`: one run, or a sweep of runs (`-m`), as users start them.

Hydra composes `conf/` with the overrides; each job prepares the data if needed (the download
and preprocess stages' code), trains (the train stage's `fit`), evaluates (the evaluate
stage's `evaluate`) and so logs one complete MLflow run. The run's files go to Hydra's job
directory, so jobs never overwrite each other or DVC's outputs. `dvc repro` runs the same
stages one process each (dvc.yaml).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from pipeline import slurm
from pipeline.cli import (
    Terminated,
    fail,
    handle_signals,
    interrupted,
    is_write_error,
    write_failed,
)
from pipeline.config import CONF_DIR, register_schemas, validate
from pipeline.data.prepared import is_prepared
from pipeline.errors import ConfigError, PipelineError
from pipeline.overrides import check_overrides
from pipeline.paths import Paths


def ensure_data(cfg: DictConfig, paths: Paths) -> None:
    """Download and preprocess unless the data this config asks for is there already: each
    dataset has directories of its own, and each step reuses what is there only when its
    record matches the config (the raw files' checksums; everything that shaped the arrays).
    """
    from pipeline.data.download import download, is_downloaded
    from pipeline.data.preprocess import preprocess

    paths = paths.of(cfg.data.name)
    if is_prepared(cfg, paths):
        return
    if not is_downloaded(cfg, paths):
        download(cfg, paths)
    preprocess(cfg, paths)


def train(
    cfg: DictConfig, paths: Paths, tags: dict[str, str] | None = None
) -> dict[str, float | str]:
    """One job: data if needed, fit, evaluate; one complete MLflow run.

    Args:
        cfg: A composed config (validated here).
        paths: Data under `paths.root`, the run's own files under `paths.out`.
        tags: More run tags (a sweep's job: its number and parent run).

    Returns:
        The run's metrics, as reports/metrics.json holds them; for a search's trial also its
        objective value, how it ended and its epochs (pipeline.search.pruning.outcome).
    """
    from pipeline.evaluate import evaluate
    from pipeline.fit import fit, unlogged_error
    from pipeline.tracking.liveness import reap_here
    from pipeline.tracking.store import connect

    cfg = validate(cfg)
    # The store first, once: one that cannot record fails here, in seconds, before any
    # download; fit and evaluate use what it found.
    store = connect(paths.root, cfg.tracking.experiment)
    reap_here(store)  # this host's runs whose process vanished: FAILED, not RUNNING forever
    ensure_data(cfg, paths)
    trial = None
    if cfg.search.trial is not None:  # a search's trial: its epochs reported to the study
        from pipeline.search.pruning import TrialReporter

        trial = TrialReporter(cfg)
    on_epoch = trial.on_epoch_end if trial else None
    result = fit(cfg, paths, entry_point="cli", tags=tags, store=store, on_epoch=on_epoch)
    if result.unlogged is not None:
        # The store failed during training: the reports still go to the job directory.
        evaluate(cfg, paths, log=False)
        raise unlogged_error(result.unlogged, paths.of(cfg.data.name))
    metrics = evaluate(cfg, paths, store=store)
    if trial is None:
        return metrics
    from pipeline.search.pruning import outcome

    return {**metrics, **outcome(trial, result.history)}


# Written into a job's directory when the job starts; a directory that has one is another run's.
CLAIM = "job.json"


def claim(out: Path) -> None:
    """Make `out` this run's own: created if needed, and refused if another run used it.

    Raises:
        PipelineError: `out` already holds a run's files (a run directory given twice).
    """
    out.mkdir(parents=True, exist_ok=True)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    try:
        with open(out / CLAIM, "x") as f:  # exclusive: of two runs, one succeeds
            json.dump(record, f)
    except FileExistsError:
        raise PipelineError(
            f"{out} holds another run's files: every run needs a directory of its own (leave "
            "hydra.run.dir and hydra.sweep.dir at their defaults, or name a new directory)"
        ) from None


def _job(cfg: DictConfig) -> dict[str, float | str]:
    """The Hydra job: where its files go, and its place in a sweep (see pipeline/sweep.py)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline.sweep import parent_run_id

    hydra = HydraConfig.get()
    paths = Paths(root=Path.cwd().resolve(), out=Path(hydra.runtime.output_dir))
    claim(paths.out)
    tags = {}
    if hydra.mode == RunMode.MULTIRUN:
        tags["sweep_job"] = str(hydra.job.num)
        if parent := parent_run_id(Path(hydra.sweep.dir)):
            tags["mlflow.parentRunId"] = parent
    # A search's jobs: its trials (chosen on validation) and the winner's final runs.
    if cfg.search.trial is not None or cfg.search.final:
        from pipeline.search.study import study_name

        tags["search.study"] = study_name(cfg)
    if cfg.search.trial is not None:
        tags["search.trial"] = str(cfg.search.trial)
    if cfg.search.final:
        tags["search.final"] = "true"
    return train(cfg, paths, tags)


def main() -> None:
    """Train and evaluate the configured model: one run, or a sweep with -m."""
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from pipeline import sweep

    args = sys.argv[1:]

    # Hydra reports a bad override as a multi-line trace; check every job of the command line
    # first so that bad input gets one line and a non-zero exit before anything is written.
    try:
        check_overrides(args)
    except ConfigError as err:
        fail(err)

    @hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
    def job(cfg: DictConfig) -> dict[str, float | str] | float:
        sweeping = HydraConfig.get().mode == RunMode.MULTIRUN
        delay = OmegaConf.select(HydraConfig.get(), "launcher.signal_delay_s")
        in_slurm = slurm.stop_on_signals(delay)  # a SLURM job: scancel, the time limit
        try:
            return _job(cfg)  # its metrics: what a search reads back (pipeline.search)
        except Terminated as err:
            if not (sweeping and in_slurm):
                raise
            # SLURM stopped this job only: its run is KILLED, the sweep goes on.
            print(f"error: job {HydraConfig.get().job.num}: {err}", file=sys.stderr)
        except PipelineError as err:
            if not sweeping:
                fail(err)
            print(f"error: job {HydraConfig.get().job.num}: {err}", file=sys.stderr)
        except Exception as err:
            if not sweeping:
                if is_write_error(err):
                    write_failed(err)
                raise
            traceback.print_exc()
        # A sweep goes on with its other jobs. The failed job's run is marked FAILED, and so
        # is the sweep's parent run, which makes the command's exit status 1.
        return float("nan")

    register_schemas()  # the schemas conf/ names, and the help text's resolver
    handle_signals()
    try:
        job()
    except KeyboardInterrupt as err:
        sweep.close_interrupted()
        interrupted(err)
    # A sweep whose jobs did not all finish has exited with status 1 at its end (sweep.py).


if __name__ == "__main__":
    main()
