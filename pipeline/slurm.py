"""A job that SLURM runs (`hydra/launcher=slurm`, or `python -m pipeline.train` in an sbatch
script): SLURM's stop signals end its MLflow run KILLED, with the reason as its `error` tag.

SLURM sends SIGTERM on `scancel` and at the time limit, and SIGKILL `KillWait` seconds later.
submitit, which runs a sweep's jobs, asks SLURM for SIGUSR2 `hydra.launcher.signal_delay_s`
before the time limit; left to itself it only logs the SIGTERM (the run would stay RUNNING) and
turns SIGUSR2 into a failure. Here both stop the training as Ctrl-C does (`Terminated`): the
run ends KILLED and keeps its progress, so `train.resume=true` continues it.
"""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

from pipeline.cli import Terminated

# submitit's default `signal_delay_s`, and how much earlier than asked SLURM may send the
# signal (it checks time limits about every 30 s; sbatch's manual allows for 60).
SIGNAL_DELAY_S = 90
SLACK_S = 60


def job_id() -> str | None:
    """This process's SLURM job (`<array job>_<task>` in a job array); None outside SLURM."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def stop_on_signals(signal_delay_s: int | None = None) -> bool:
    """In a SLURM job, make SIGTERM and SIGUSR2 raise `Terminated` with SLURM's reason.

    Args:
        signal_delay_s: How long before the time limit SIGUSR2 was asked for.

    Returns:
        Whether this process is a SLURM job (and so the handlers are set).
    """
    job = job_id()
    if job is None:
        return False
    delay = SIGNAL_DELAY_S if signal_delay_s is None else signal_delay_s
    warned: list[int] = []

    def warn(signum: int, frame: Any) -> None:
        # Passed on as SIGTERM, which a training holds until its `fit` has ended early
        # (pipeline.fit), so an epoch's backup and its logging stay whole.
        warned.append(signum)
        signal.raise_signal(signal.SIGTERM)

    def stop(signum: int, frame: Any) -> None:
        # The run is being closed: a second signal must not cut that off.
        for s in (signal.SIGTERM, signal.SIGUSR2):
            signal.signal(s, signal.SIG_IGN)
        raise Terminated(reason(job, warned[0] if warned else signum, delay))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGUSR2, warn)
    return True


def reason(job: str, signum: int, signal_delay_s: int) -> str:
    """Why SLURM sent `signum`, judged by the job's elapsed time against its time limit:
    SIGTERM before the limit is `scancel`; SIGUSR2 well before it is a preemption."""
    elapsed, limit = job_times(job)
    name = signal.Signals(signum).name
    if elapsed is None or limit is None:
        return f"SLURM job {job} stopped by {name} (scancel, its time limit or a preemption)"
    margin = 0 if signum == signal.SIGTERM else signal_delay_s + SLACK_S
    if elapsed >= limit - margin:
        what = "reached its time limit"
    else:
        what = "was cancelled (scancel)" if signum == signal.SIGTERM else "was preempted"
    return f"SLURM job {job} {what}: {name} after {clock(elapsed)} of its {clock(limit)}"


def job_times(job: str) -> tuple[int | None, int | None]:
    """The job's elapsed time and time limit in seconds, as squeue reports them (None for
    what it cannot tell: no squeue, no limit)."""
    try:
        out = subprocess.run(
            ["squeue", "--noheader", "--states=all", "--jobs", job, "--format", "%M %l"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None, None
    if len(out) != 2:
        return None, None
    return seconds(out[0]), seconds(out[1])


def seconds(text: str) -> int | None:
    """SLURM's `[days-][hours:]minutes:seconds` in seconds; None for UNLIMITED and the like."""
    days, _, rest = text.rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
        whole_days = int(days) if days else 0
    except ValueError:
        return None
    if len(parts) not in (2, 3):
        return None
    hours, minutes, secs = [0] * (3 - len(parts)) + parts
    return whole_days * 86400 + hours * 3600 + minutes * 60 + secs


def clock(total: int) -> str:
    """Seconds as SLURM writes them: `1:05`, `1:00:00`."""
    hours, rest = divmod(total, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
