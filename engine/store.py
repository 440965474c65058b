"""The Zarr v3 stores of a run: layout, metadata, and the ledger of completed chunks.

This is the only module that knows paths inside a store. A store is one Zarr group whose arrays are
sample-major, pre-sized for all N samples and chunked along `sample` by the run's chunk size, so a
work unit (a chunk of latent indices) writes whole Zarr chunks and nothing else: no appends, no
read-modify-write, several writers can own disjoint chunks. After a unit's arrays are written the
`ledger` entry of that unit (its own Zarr chunk) is set to 1; a unit is complete iff its entry is 1.
Killing a writer loses at most the units in flight.

Group attributes, key ``rescore``:
    format          "rescore.samples" | "rescore.rescore"
    format_version  integer, bumped on any incompatible layout change
    identity        everything that determines the stored values (model, checkpoint digests,
                    predictors, seed, sizes, backend, precision, ...); a rerun with another
                    identity is refused instead of mixing results
    num_samples, chunk_size, rescore_version, plus kind-specific entries (semantic names, ...)
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .errors import StoreError, StoreMismatchError
from .version import __version__

FORMAT_VERSION = 1
LEDGER = "ledger"
_ATTR = "rescore"


@dataclass(frozen=True)
class ArraySpec:
    """A sample-major array: its name, full shape, Zarr dimension names and dtype."""

    name: str
    shape: tuple[int, ...]
    dims: tuple[str, ...]
    dtype: str = "float32"
    inner_chunks: tuple[int, ...] | None = None  # chunking of the non-sample axes (default: whole)


class ChunkedStore:
    """A run's Zarr group written in units of `chunk_size` samples, with a completion ledger."""

    def __init__(self, path: Path, group: zarr.Group) -> None:
        self.path = path
        self.group = group
        meta = dict(group.attrs).get(_ATTR)
        if not isinstance(meta, dict) or "format" not in meta:
            raise StoreError(f"{path} is not a rescore store (no '{_ATTR}' attributes)")
        self.meta: dict[str, Any] = meta
        self.num_samples = int(meta["num_samples"])
        self.chunk_size = int(meta["chunk_size"])
        self.num_chunks = -(-self.num_samples // self.chunk_size)

    # ---- creation and opening -------------------------------------------------------------

    @classmethod
    def create_or_resume(
        cls,
        path: Path,
        *,
        kind: str,
        identity: Mapping[str, Any],
        num_samples: int,
        chunk_size: int,
        arrays: list[ArraySpec],
        static: Mapping[str, tuple[np.ndarray, tuple[str, ...]]] = {},
        attrs: Mapping[str, Any] = {},
    ) -> ChunkedStore:
        """Open the store at `path` if it was made by the same identity, else create it.

        Creation happens in a temporary sibling directory that is renamed into place, so a store
        either exists whole (metadata, static arrays, empty ledger) or not at all.
        """
        path = Path(path)
        identity = _normalize(identity)
        if path.exists():
            store = cls.open(path, kind=kind)
            store._check_identity(identity)
            return store
        if num_samples <= 0 or chunk_size <= 0:
            raise StoreError(
                f"a store needs num_samples > 0 and chunk_size > 0 (got "
                f"{num_samples}, {chunk_size})"
            )
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            group = zarr.open_group(staging, mode="w")
            num_chunks = -(-num_samples // chunk_size)
            for spec in arrays:
                inner = spec.inner_chunks or spec.shape[1:]
                group.create_array(
                    spec.name,
                    shape=(num_samples, *spec.shape[1:]),
                    chunks=(min(chunk_size, num_samples), *inner),
                    dtype=spec.dtype,
                    dimension_names=spec.dims,
                    fill_value=np.nan if spec.dtype.startswith("float") else 0,
                )
            for name, (data, dims) in static.items():
                group.create_array(name, data=np.asarray(data), dimension_names=dims)
            group.create_array(
                LEDGER,
                shape=(num_chunks,),
                chunks=(1,),
                dtype="uint8",
                fill_value=0,
                dimension_names=("chunk",),
            )
            group.attrs[_ATTR] = _normalize(
                {
                    "format": kind,
                    "format_version": FORMAT_VERSION,
                    "identity": identity,
                    "num_samples": num_samples,
                    "chunk_size": chunk_size,
                    "rescore_version": __version__,
                    **attrs,
                }
            )
            os.replace(staging, path)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            raise StoreError(
                f"cannot create store {path} ({error}); choose a writable --out"
            ) from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path, kind=kind)

    @classmethod
    def open(cls, path: Path, *, kind: str, mode: str = "r+") -> ChunkedStore:
        """Open an existing store of the given kind, checking its format version."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"store not found: {path}; run the step that writes it first")
        try:
            group = zarr.open_group(path, mode=mode)
        except Exception as error:  # zarr raises several types for a damaged group
            raise StoreError(f"{path} is not a readable Zarr v3 group ({error})") from error
        store = cls(path, group)
        if store.meta.get("format") != kind:
            raise StoreError(f"{path} holds a '{store.meta.get('format')}' store, not '{kind}'")
        if store.meta.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{path} has format version {store.meta.get('format_version')}, this rescore "
                f"reads {FORMAT_VERSION}; re-create it with this version"
            )
        return store

    def _check_identity(self, identity: dict[str, Any]) -> None:
        stored = self.meta.get("identity", {})
        if stored == identity:
            return
        keys = sorted(set(stored) | set(identity))
        differing = [k for k in keys if stored.get(k) != identity.get(k)]
        detail = "; ".join(
            f"{k}: store={_short(stored.get(k))} now={_short(identity.get(k))}"
            for k in differing[:4]
        )
        raise StoreMismatchError(
            f"{self.path} was written by another run configuration ({detail}); "
            f"use a new --out directory or the original settings"
        )

    # ---- chunk bookkeeping -------------------------------------------------------------------

    def chunk_range(self, chunk: int) -> tuple[int, int]:
        """Sample indices [start, stop) of a chunk."""
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.num_samples)

    def completed(self) -> np.ndarray:
        """bool [num_chunks]: which chunks are complete."""
        return self.group[LEDGER][:].astype(bool)

    def pending_chunks(self) -> list[int]:
        """Chunks not yet complete, in order."""
        return [int(i) for i in np.flatnonzero(~self.completed())]

    def is_complete(self) -> bool:
        return bool(self.completed().all())

    def finish(self, info: Mapping[str, Any]) -> None:
        """Record that the writer is done (also when it stopped before the last chunk on purpose,
        e.g. adaptive K met its target); readers accept a finished store as complete."""
        meta = dict(self.group.attrs[_ATTR])
        meta["finished"] = _normalize(info)
        self.group.attrs[_ATTR] = meta
        self.meta = meta

    def require_complete(self, what: str) -> None:
        """Raise if the writer has not finished (a reader must not use a partial store)."""
        pending = self.pending_chunks()
        if pending and "finished" not in self.meta:
            raise StoreError(
                f"{self.path} is incomplete ({len(pending)} of {self.num_chunks} chunks missing); "
                f"rerun the command that writes it to finish it before {what}"
            )

    def write_chunk(self, chunk: int, values: Mapping[str, np.ndarray]) -> None:
        """Write one chunk's rows of each named array, then mark the chunk complete."""
        start, stop = self.chunk_range(chunk)
        for name, data in values.items():
            array = self.group[name]
            if data.shape[0] != stop - start or tuple(data.shape[1:]) != tuple(array.shape[1:]):
                raise ValueError(
                    f"chunk {chunk} of '{name}': got {data.shape}, expected "
                    f"({stop - start}, {', '.join(map(str, array.shape[1:]))})"
                )
            array[start:stop] = data
        self.group[LEDGER][chunk] = 1

    def array(self, name: str) -> zarr.Array:
        """A data array of the store by name."""
        if name not in self.group:
            raise StoreError(
                f"{self.path} has no array '{name}' (has: "
                f"{', '.join(sorted(self.group.array_keys()))})"
            )
        return self.group[name]

    def has(self, name: str) -> bool:
        return name in self.group


def _normalize(value: Any) -> Any:
    """JSON round trip, so stored and fresh metadata compare equal (tuples -> lists, ...)."""
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
