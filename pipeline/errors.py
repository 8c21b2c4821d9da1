"""The pipeline's expected failures: each is reported in one line, with no traceback.

Imports nothing of the project, so that every module can raise them.
"""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure (bad input, unreachable data): one line, non-zero exit."""


class ConfigError(PipelineError, ValueError):
    """A configuration value is invalid; the message names key, value and what is valid."""


class DownloadError(PipelineError):
    """No source could deliver verified data files."""


class ChecksumError(DownloadError):
    """A file arrived, but its content is not the dataset's."""


class DataError(PipelineError):
    """Prepared data is missing, stale or damaged."""


class ModelError(PipelineError):
    """A saved model is missing, damaged, or cannot be loaded safely."""


class DivergedError(PipelineError):
    """Training diverged: the loss is no longer a number."""


class TrackingError(PipelineError):
    """A run could not be recorded."""


class UnloggedRunError(TrackingError):
    """A run finished, but the tracking store failed while recording it: its files are kept
    in its job directory, for `python -m pipeline.tracking log <job dir>`."""
