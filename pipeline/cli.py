"""Command-line plumbing shared by the commands: one-line errors, non-zero exits, signals."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from omegaconf import DictConfig

from pipeline.config import load_params
from pipeline.errors import PipelineError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that runs end KILLED, not RUNNING."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def handle_signals() -> None:
    """Make SIGTERM interrupt the process the way SIGINT does (it would otherwise end it on
    the spot, leaving its MLflow run RUNNING forever)."""
    signal.signal(signal.SIGTERM, _terminate)


@contextmanager
def signals_held() -> Iterator[Callable[[], None]]:
    """Hold SIGINT and SIGTERM while the block runs, and act on a held one as usual when it
    ends, or earlier wherever the block calls the function this yields: work that must be
    whole is never cut in the middle. Outside the main thread, where Python runs no signal
    handler, the block runs as it is."""
    signals = (signal.SIGINT, signal.SIGTERM)
    saved = {s: signal.getsignal(s) for s in signals}
    if threading.current_thread() is not threading.main_thread() or None in saved.values():
        yield lambda: None  # (a handler not set from Python cannot be put back)
        return
    held: list[int] = []

    def hold() -> None:
        for s in signals:
            signal.signal(s, lambda signum, frame: held.append(signum))

    def release() -> None:
        for s, handler in saved.items():
            signal.signal(s, handler)
        if held:
            signal.raise_signal(held.pop(0))  # the usual handler: raises, as a rule

    def deliver() -> None:
        if held:
            release()
            hold()  # a handler that did not raise: the block goes on, still held

    hold()
    try:
        yield deliver
    finally:
        release()


def interrupted(err: KeyboardInterrupt) -> None:
    """Report an interruption in one line and exit with the shell's status for the signal."""
    print(f"interrupted: {err or 'SIGINT'}", file=sys.stderr)
    sys.exit(143 if isinstance(err, Terminated) else 130)


# Errors of the output's file system, not of the pipeline: said in one line, not a traceback.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def is_write_error(err: BaseException) -> bool:
    return isinstance(err, OSError) and err.errno in _WRITE_ERRNOS


def write_failed(err: OSError) -> None:
    where = f" {err.filename}" if err.filename else ""
    fail(f"cannot write{where}: {err.strerror}")


def fail(err: BaseException | str) -> None:
    """Report an expected failure in one line on stderr and exit with status 1."""
    print(f"error: {err}", file=sys.stderr)
    sys.exit(1)


def run_stage(
    stage: Callable[[DictConfig], Any], description: str | None, argv: list[str] | None = None
) -> None:
    """Entry point of a DVC stage: validate `params.yaml`, then run the stage on it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="config file (params.yaml)")
    args = parser.parse_args(argv)
    handle_signals()
    try:
        stage(load_params(args.params))
    except PipelineError as err:
        fail(err)
    except KeyboardInterrupt as err:
        interrupted(err)
    except OSError as err:
        if not is_write_error(err):
            raise
        write_failed(err)
