"""Command-line plumbing shared by the stage modules: one-line errors and non-zero exits."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig

from pipeline.config import PipelineError, load_params


def fail(err: BaseException) -> None:
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
    try:
        stage(load_params(args.params))
    except PipelineError as err:
        fail(err)
