"""The project's error types: every expected failure is a :class:`PotstillError` with one clear line.

``ConfigError`` (bad recipe key, type or value; ``potstill.core.config``) and ``DataError``
(missing or malformed data file; ``potstill.data``) derive from it, as do the two below. The
command line prints their message and exits non-zero; anything else is a bug.
"""
from __future__ import annotations


class PotstillError(Exception):
    """Base of every error potstill raises on purpose."""


class TrainingError(PotstillError, RuntimeError):
    """Training cannot go on (a non-finite loss); the message names the parameter group and step."""


class CheckpointError(PotstillError, OSError):
    """A checkpoint or output file could not be written (full disk, unwritable folder); earlier
    checkpoints are left as they were."""
