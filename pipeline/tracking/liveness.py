"""Where a run runs and whether it still does: its process as tags (host, pid, start time,
SLURM job), a heartbeat while it is open, and the reap that ends as FAILED the RUNNING runs
whose process is gone (`python -m pipeline.tracking reap`).

A process killed with SIGKILL (the OOM killer, a node failure, SLURM at a time limit) never
ends its run: without this, MLflow shows it RUNNING forever.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipeline.tracking.store import (
    Store,
    failure,
    mlflow_client,
    quick_answers,
    retrying,
    store_errors,
)

HEARTBEAT = "heartbeat"
# A beat every half minute: a tag written twice a minute costs nothing measurable, and a run
# is stale only after `--stale` minutes (10 by default) without one.
BEAT_SECONDS = 30.0
STALE_MINUTES = 10.0
# SLURM's variables, recorded as the tags of the same name in lower case.
_SLURM = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID")
# Tags the pipeline's own runs carry from their start (a job's and a sweep's parent): a RUNNING
# run without a heartbeat and without these was started by other code, and is not judged.
_OURS = ("entry_point", "sweep")


def _iso(seconds: float, digits: int = 0) -> str:
    """`seconds` since the epoch as UTC ISO 8601 with `digits` decimals: 2026-05-01T10:42:07Z."""
    text = datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")
    return text[: 19 + (digits + 1 if digits else 0)] + "Z"


def process_start(pid: int) -> str | None:
    """When process `pid` started (UTC, to the kernel's clock tick), or None if there is no
    such process (or no /proc): a pid reused by another process gives another time."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        booted = next(
            int(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime ")
        )
    except (OSError, StopIteration, ValueError):
        return None
    ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, starttime, after the name
    return _iso(booted + ticks / os.sysconf("SC_CLK_TCK"), digits=2)


def where() -> dict[str, str]:
    """This process as tags: `host`, `pid`, `process_start`, and SLURM's job ids if any."""
    tags = {"host": socket.gethostname(), "pid": str(os.getpid())}
    if started := process_start(os.getpid()):
        tags["process_start"] = started
    tags.update({k.lower(): os.environ[k] for k in _SLURM if os.environ.get(k)})
    return tags


class Heartbeat:
    """Tags a run with where it runs, then beats (the tag `heartbeat`, the time) every
    `BEAT_SECONDS` from a daemon thread until `stop`. The first beat is made at once, so that a
    failing store fails the start; later beats that fail are left to the next one."""

    def __init__(self, uri: str, run_id: str) -> None:
        self._client, self._run_id = mlflow_client(uri), run_id
        self._stopped = threading.Event()
        self._beat({**where(), HEARTBEAT: _iso(time.time())})
        self._thread = threading.Thread(target=self._beating, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat(self, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(k, v) for k, v in tags.items()]
        retrying(self._client.log_batch, self._run_id, tags=tags)

    def _beating(self) -> None:
        while not self._stopped.wait(BEAT_SECONDS):
            # The store busy or gone: the run's own logging says so.
            with contextlib.suppress(Exception):
                self._beat({HEARTBEAT: _iso(time.time())})

    def stop(self) -> None:
        self._stopped.set()
        # A beat in flight is let finish (briefly): it writes a tag, never the run's status.
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class Vanished:
    """A RUNNING run whose process is gone, and why (the `error` tag it gets)."""

    run_id: str
    run_name: str
    reason: str


def _seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _alive(pid: int, started: str | None) -> bool:
    """Whether process `pid` of this host is the one that started at `started`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    return started is None or process_start(pid) in (started, None)


def vanished(run: Any, stale_minutes: float, now: float, host: str) -> Vanished | None:
    """Whether a RUNNING run's process is gone: on this host, its pid is no longer its
    process; elsewhere, its last beat (or, before any, its start) is older than
    `stale_minutes`. A live process of this host is never judged by its beat."""
    tags = run.data.tags
    last = tags.get(HEARTBEAT)
    if last is None and not any(k in tags for k in _OURS):
        return None  # not the pipeline's run: no beat is expected from it
    last_seconds = _seconds(last) if last else run.info.start_time / 1000
    since = last or _iso(last_seconds)
    reason = f"vanished: no heartbeat since {since} (host {tags.get('host', '?')}, "
    reason += f"pid {tags.get('pid', '?')})"
    if tags.get("host") == host and tags.get("pid", "").isdigit():
        if _alive(int(tags["pid"]), tags.get("process_start")):
            return None
    elif now - last_seconds <= stale_minutes * 60:
        return None
    return Vanished(run.info.run_id, run.info.run_name, reason)


def _end(client: Any, found: Vanished) -> None:
    retrying(client.set_tag, found.run_id, "error", found.reason)
    retrying(client.set_terminated, found.run_id, "FAILED")


def reap(
    uri: str, experiment_ids: list[str], stale_minutes: float, only_here: bool = False
) -> list[Vanished]:
    """End as FAILED, tagged `error`, every RUNNING run of the experiments that `vanished`.

    Args:
        only_here: Only this host's runs, judged by their process alone (one query, then a
            look at /proc: what every training's start does).
    """
    client, host = mlflow_client(uri), socket.gethostname()
    where_clause = "attributes.status = 'RUNNING'"
    if only_here:
        where_clause += f" and tags.host = '{host}'"
    runs = retrying(
        client.search_runs, experiment_ids, filter_string=where_clause, max_results=50_000
    )
    stale = float("inf") if only_here else stale_minutes
    found = [v for r in runs if (v := vanished(r, stale, time.time(), host))]
    for run in found:
        _end(client, run)
    return found


def reap_here(store: Store) -> None:
    """At a training's start: end this host's runs in `store`'s experiment whose process is
    gone, one line each."""
    for run in reap(store.uri, [store.experiment_id], STALE_MINUTES, only_here=True):
        print(f"MLflow run {run.run_name} ({run.run_id}) FAILED: {run.reason}", file=sys.stderr)


def reap_command(uri: str, stale_minutes: float) -> None:
    """`python -m pipeline.tracking reap`: every experiment of the store, one line per run
    ended and a summary.

    Raises:
        TrackingError: the store cannot be used (its URI and the cause).
    """
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        print(f"reaped 0 vanished runs: no store at {uri}")
        return
    try:
        with quick_answers():  # a store that is down fails in seconds
            client = mlflow_client(uri)
            experiments = [e.experiment_id for e in retrying(client.search_experiments)]
            found = reap(uri, experiments, stale_minutes)
    except store_errors() as err:
        raise failure(uri, err) from None
    for run in found:
        print(f"{run.run_id} {run.run_name}: FAILED, {run.reason}")
    print(f"reaped {len(found)} vanished run(s) in {uri} (stale after {stale_minutes:g} min)")
