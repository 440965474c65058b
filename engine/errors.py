"""Errors the engine raises for user mistakes (all `RescoreError`s; see rescore.models.errors)."""

from __future__ import annotations

from rescore.models.errors import RescoreError


class StoreMismatchError(RescoreError):
    """An existing store was written by another run configuration."""


class StoreError(RescoreError):
    """A store is missing, unreadable, incomplete or not a rescore store."""


class BoundaryError(RescoreError):
    """A boundary file is unreadable, unsafe, or does not fit the model."""


class ScoreError(RescoreError):
    """Scores are unusable for the requested operation (NaN/inf, one class only, ...)."""


class OutputError(RescoreError):
    """An output location cannot be written."""


class ExecutorError(RescoreError):
    """The distributed executor cannot run (Ray missing, bad worker count, cluster failure)."""


class DamagedStoreError(StoreError):
    """A store's chunk or metadata cannot be read back intact (checksum, codec, missing file)."""
