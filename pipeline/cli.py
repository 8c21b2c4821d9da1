"""Command-line plumbing shared by the commands: one-line errors, non-zero exits, signals."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Callable
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


class SignalsHeld:
    """Hold SIGINT and SIGTERM while a `with` block runs, and act on a held one as usual when
    it ends: work that must be whole is never cut in the middle. Work that can end early on its
    own asks `pending()` and stops (a training: pipeline.fit). Outside the main thread, where
    Python runs no signal handler, the block runs as it is."""

    signals = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._held: list[int] = []
        self._saved: dict[int, Any] = {}

    def pending(self) -> bool:
        """Whether a signal is waiting for the block to end."""
        return bool(self._held)

    def __enter__(self) -> SignalsHeld:
        saved = {s: signal.getsignal(s) for s in self.signals}
        # (A handler not set from Python cannot be put back.)
        if threading.current_thread() is threading.main_thread() and None not in saved.values():
            self._saved = saved
            for s in self.signals:
                signal.signal(s, lambda signum, frame: self._held.append(signum))
        return self

    def __exit__(self, *exc: object) -> None:
        saved, self._saved = self._saved, {}
        for s, handler in saved.items():
            signal.signal(s, handler)
        if self._held:
            signal.raise_signal(self._held.pop(0))  # the usual handler: raises, as a rule


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
