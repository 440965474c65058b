"""User-facing error types shared by every rescore package.

Library code raises these for user mistakes (bad files, unknown names, mismatched shapes); the CLI
turns any `RescoreError` into one line on stderr and a non-zero exit code. Messages name the
problem *and* the fix.
"""

from __future__ import annotations


class RescoreError(Exception):
    """Base class of every error caused by user input rather than by a bug."""


class CheckpointError(RescoreError):
    """A checkpoint file is missing, truncated, unsafe or does not fit the architecture."""


class UnknownNameError(RescoreError):
    """A model, predictor, semantic or backend name is not known."""


class ShapeMismatchError(RescoreError):
    """An input array (codes, boundary, ...) does not fit the model's geometry."""


class BackendUnavailableError(RescoreError):
    """A requested backend or device is not installed or not present on this machine."""
