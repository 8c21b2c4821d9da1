"""A Hydra sweep (`python -m pipeline.train -m ...`) as one group in MLflow.

The callback opens a parent run when the sweep starts and writes its id into the sweep
directory, where every job (in this process or, with a parallel launcher, in another) finds it
and tags its own run as a child (`mlflow.parentRunId`). When the sweep ends, the parent gets
the comparison of its children (table and plots from `pipeline.compare`) and a status that
reflects them: FAILED if any job failed or left no run. A study preset's sweep
(`+experiment=width`, conf/experiment/) also gets its study plot and table there, the
selection study (`+experiment=selection`) its report (pipeline.selection). A
hyperparameter search (`+search=mlp`) is named and reported by pipeline.search.report.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.config import searching
from pipeline.io import write_json
from pipeline.overrides import BASIC_SWEEPER, sweep_values
from pipeline.tracking.liveness import Heartbeat
from pipeline.tracking.search import child_runs, create_run, end_run, log_artifacts_to
from pipeline.tracking.store import DEFAULT_EXPERIMENT, connect

PARENT_FILE = "mlflow_parent.json"


@dataclass
class _OpenParent:
    """The parent run of a sweep in progress in this process, its store, and its heartbeat
    (`python -m pipeline.tracking reap`): closed if the sweep is interrupted."""

    run_id: str
    uri: str
    beat: Heartbeat


_open: _OpenParent | None = None


def _close_open_parent(status: str, tags: dict[str, str]) -> None:
    """End the open parent run, if any, with `status` and `tags`, its heartbeat first."""
    global _open
    if _open is not None:
        _open.beat.stop()
        end_run(_open.uri, _open.run_id, status, tags)
        _open = None


def _jobs(overrides: list[str], sweeper: str = BASIC_SWEEPER) -> int:
    """How many jobs the sweep's command-line overrides stand for (`a=1,2 b=x,y`: 4)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    return math.prod(len(values) for values in sweep_values(parsed, sweeper))


def _parallel_jobs(config: DictConfig, cores: int) -> int:
    """How many jobs of the sweep run at once on this machine."""
    launcher = OmegaConf.select(config, "hydra.launcher._target_", default="")
    if launcher.endswith(".JoblibLauncher"):
        n_jobs = config.hydra.launcher.n_jobs or 1
        # joblib's negative counts are relative to the cores: -1 is all, -2 all but one.
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)
    elif launcher.endswith("hydra_submitit_launcher.submitit_launcher.LocalLauncher"):
        workers = 0  # no limit: it starts every job it is handed at once
    else:
        # One job at a time (the basic launcher), or jobs on other machines (SLURM), where
        # each gets the cores SLURM binds to it: the variables below would be wrong there.
        return 1
    sweeper = OmegaConf.select(config, "hydra.sweeper._target_", default=BASIC_SWEEPER)
    if searching(config):  # its trials, as many at once as the launcher runs
        jobs = max(config.search.trials, config.search.final_seeds)
    else:
        jobs = _jobs(config.hydra.overrides.task, sweeper)
    if batch := OmegaConf.select(config, "hydra.sweeper.max_batch_size"):
        jobs = min(jobs, batch)  # the sweeper hands the launcher this many jobs at a time
    return min(workers, jobs) if workers else jobs


def _share_cores(config: DictConfig) -> None:
    """With jobs in parallel on this machine (joblib, submitit_local), give each job its share
    of the cores, so that N TensorFlow processes do not each start a thread per core."""
    cores = os.cpu_count() or 1
    parallel = min(_parallel_jobs(config, cores), cores)
    if parallel <= 1:
        return
    threads = str(max(1, cores // parallel))
    # Read by TensorFlow (and OpenMP) when a job's process starts; job processes inherit them.
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", threads)
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")


def parent_run_id(sweep_dir: Path) -> str | None:
    """The sweep's parent run, if the callback opened one for this sweep directory."""
    path = Path(sweep_dir) / PARENT_FILE
    return json.loads(path.read_text())["run_id"] if path.is_file() else None


class MlflowSweep(Callback):
    """Hydra callback: a parent MLflow run per multirun, finished with its children's report."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _share_cores(config)
        sweep_dir = Path(config.hydra.sweep.dir)
        overrides = " ".join(config.hydra.overrides.task)
        name, tags = f"sweep {overrides}"[:250], {}
        if searching(config):
            from pipeline.search.report import parent_run

            name, tags = parent_run(config)
        # Jobs may choose other datasets (data=mnist,fashion_mnist): the parent goes to the
        # experiment of the sweep's own config, each job's run to its own.
        experiment = OmegaConf.select(config, "tracking.experiment") or DEFAULT_EXPERIMENT
        # First: it creates the store safely, and refuses a user who may not add runs there.
        store = connect(Path.cwd(), experiment)
        run_id = create_run(
            store,
            run_name=name,
            tags={"sweep": "parent", "sweep_dir": str(sweep_dir), "overrides": overrides, **tags},
        )
        write_json(sweep_dir / PARENT_FILE, {"run_id": run_id})
        global _open
        _open = _OpenParent(run_id, store.uri, Heartbeat(store.uri, run_id))
        atexit.register(_close_aborted)
        print(f"MLflow sweep run {run_id}: its jobs are its child runs", file=sys.stderr)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from pipeline import compare, selection, study

        if _open is None:  # no parent run opened (or still open) in this process
            return
        sweep_dir = Path(config.hydra.sweep.dir)
        uri, run_id = _open.uri, _open.run_id
        children = child_runs(uri, run_id)
        if searching(config):
            from pipeline.search.report import finish

            self._end(config, run_id, *finish(config, uri, run_id, children))
            return
        jobs = len(list(sweep_dir.glob("[0-9]*/.hydra")))
        failed = [c for c in children if c.info.status != "FINISHED"]
        evaluated = [
            c for c in children if c.info.status == "FINISHED" and "test_accuracy" in c.data.metrics
        ]
        if evaluated:
            # Jobs that differ only in their seed are replicates of one configuration.
            groups = compare.group_rows(compare.rows_of(evaluated))
            title = f"sweep of {len(children)} jobs: {len(groups)} configurations"
            out = sweep_dir / "compare"
            report = compare.write_groups_report(uri, groups, out, title)
            # A study preset's sweep: its jobs against the key it varies (or per epoch).
            name = OmegaConf.select(config, "study.name")
            if x := OmegaConf.select(config, "study.x"):
                report += study.study_report(uri, groups, x, out, f"study {name}")
            if name == selection.STUDY:  # its picks on test and on validation, scored
                report += selection.report(
                    uri, groups, evaluated, sweep_dir, run_id, config.data.name
                )
            log_artifacts_to(uri, run_id, report, "compare")
        status = "FAILED" if failed or len(children) < jobs else "FINISHED"
        jobs_tag = f"{len(children) - len(failed)} of {jobs} finished"
        # A parallel launcher keeps each job's output in its own log: say here which jobs
        # failed and why.
        lines = _failures(sweep_dir, list(config.hydra.overrides.task), children)
        self._end(config, run_id, status, jobs_tag, lines)

    def _end(
        self, config: DictConfig, run_id: str, status: str, jobs: str, lines: tuple = ()
    ) -> None:
        """Close the parent run `run_id` with `status`, its tag `jobs`, and say so (and
        `lines`)."""
        _close_open_parent(status, {"jobs": jobs})
        write_json(Path(config.hydra.sweep.dir) / PARENT_FILE, {"run_id": run_id, "status": status})
        print(f"MLflow sweep run {run_id} {status} ({jobs})", file=sys.stderr)
        for line in lines:
            print(line, file=sys.stderr)
        if status == "FAILED":
            sys.exit(1)  # the command's exit status: after everything above, as Hydra ends


def _failures(sweep_dir: Path, task: list[str], children: list) -> list[str]:
    """One line per job of the sweep that did not finish: its number, what it set that the
    other jobs did not, and why (its run's `error` tag, or that it left no run)."""
    import yaml

    runs = {run.data.tags.get("sweep_job"): run for run in children}
    lines = []
    for job_dir in sorted(sweep_dir.glob("[0-9]*/.hydra"), key=lambda p: int(p.parent.name)):
        job = job_dir.parent.name
        run = runs.get(job)
        if run is not None and run.info.status == "FINISHED":
            continue
        overrides = yaml.safe_load((job_dir / "overrides.yaml").read_text())
        varied = " ".join(o for o in overrides if o not in task)
        if run is None:
            why = f"left no run (its output: {job_dir.parent})"
        else:
            why = run.data.tags.get("error", f"run {run.info.run_id} {run.info.status}")
        lines.append(f"job {job} ({varied}): {why}")
    return lines


def close_interrupted() -> None:
    """Mark the sweep in progress KILLED: its jobs' runs were interrupted with it."""
    _close_open_parent("KILLED", {"error": "sweep interrupted"})


def _close_aborted() -> None:
    """At exit, a parent still open means the sweep stopped before its end (a job's process
    died, the launcher failed): mark it FAILED rather than leave it RUNNING."""
    _close_open_parent("FAILED", {"error": "sweep aborted before all its jobs returned"})
