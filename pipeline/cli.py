"""Command-line plumbing shared by the stage modules: one-line errors and non-zero exits."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from pipeline.config import PipelineError, load_params


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's KeyboardInterrupt so that runs end KILLED, not RUNNING."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(f"stopped by signal {signal.Signals(signum).name}")


def handle_signals() -> None:
    """Make SIGTERM interrupt the process the way SIGINT does (it would otherwise end it on
    the spot, leaving its MLflow run RUNNING forever)."""
    signal.signal(signal.SIGTERM, _terminate)


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


_succeeded = False


def _end_without_teardown() -> None:
    if not _succeeded:
        return  # a failure ends the ordinary way, with its own exit status
    logging.shutdown()  # its exit handler was registered before this one, so would not run
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(0)


def run(main: Callable[[], None]) -> None:
    """Run a module's `main` as this process's command (its `__main__` block).

    A command that succeeds skips the interpreter's teardown. Python still joins its threads
    and runs the exit handlers registered from here on (MLflow's flushes among them), then
    exits at once instead of freeing every module object by object: with TensorFlow loaded
    that took over a second here, after all the work, in each `dvc repro` stage that trains
    or evaluates. Every file is written and closed by then.
    """
    global _succeeded
    atexit.register(_end_without_teardown)  # registered first, so it runs last
    main()
    _succeeded = True
