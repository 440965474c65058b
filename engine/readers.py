"""Opening a run's finished stores for reading, without torch (the public API builds on this).

The writers (`sample.py`, `rescore.py`) create the stores; this module only names their formats
and opens complete ones, so other applications can read them without the models' dependencies.
A store may be a local path or an object-store URL (``s3://bucket/run/samples.zarr``; credentials
and endpoint from fsspec's configuration, or a `location.StoreUrl` carrying storage options).
"""

from __future__ import annotations

from pathlib import Path

from .location import StoreUrl
from .store import ChunkedStore

SAMPLES_KIND = "rescore.samples"
RESCORE_KIND = "rescore.rescore"


def open_samples(path: Path | StoreUrl | str) -> ChunkedStore:
    """Open a finished samples store for reading."""
    store = ChunkedStore.open(path, kind=SAMPLES_KIND, mode="r")
    store.require_complete("using its samples")
    return store


def open_rescore(path: Path | StoreUrl | str) -> ChunkedStore:
    """Open a finished rescore store for reading."""
    store = ChunkedStore.open(path, kind=RESCORE_KIND, mode="r")
    store.require_complete("computing statistics")
    return store
