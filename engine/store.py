"""The Zarr v3 stores of a run: layout, metadata, and the ledger of completed chunks.

This is the only module that knows paths inside a store. A store is one Zarr group whose arrays are
sample-major, pre-sized for all N samples and chunked along `sample` by the run's chunk size, so a
work unit (a chunk of latent indices) writes whole Zarr chunks and nothing else: no appends, no
read-modify-write, several writers can own disjoint chunks. After a unit's arrays are written the
`ledger` entry of that unit (its own Zarr chunk) is set to 1; a unit is complete iff its entry is 1.
Killing a writer loses at most the units in flight.

Every array's codec pipeline ends in Zarr v3's ``crc32c`` checksum (format version 2), and every
chunk is written even when it holds only fill values, so a truncated, altered or deleted chunk is
detected on read (`DamagedStoreError`, naming the store, array and chunk) and by `rescore check`,
which marks the damaged units pending again. Format 1 stores (no checksums) are still read and
resumed; damage in them is not detectable.

A store may also live on an object store (`location.StoreUrl`, through zarr's `FsspecStore`):
chunks and ledger entries are then single objects written in the same order, and creation, which
cannot be renamed into place there, happens in place under a ``creating`` marker that the final
attributes replace (see `_create_in_place`).

Group attributes, key ``rescore``:
    format          "rescore.samples" | "rescore.rescore" | "rescore.projections"
    format_version  integer, bumped on any incompatible layout change
    identity        everything that determines the stored values (model, checkpoint digests,
                    predictors, seed, sizes, backend, precision, ...); a rerun with another
                    identity is refused instead of mixing results
    num_samples, chunk_size, rescore_version, plus kind-specific entries (semantic names, ...)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.core.sync import sync

from rescore.models.errors import RescoreError

from .errors import DamagedStoreError, StoreError, StoreMismatchError
from .location import Location, StoreUrl, as_location
from .version import __version__

FORMAT_VERSION = 2  # 2: crc32c on every chunk, empty chunks written (1: neither; still read)
READABLE_VERSIONS = (1, 2)
LEDGER = "ledger"
_ATTR = "rescore"
log = logging.getLogger(__name__)
# Attributes every store has, and the types of optional ones readers rely on.
_REQUIRED = {
    "format": str,
    "format_version": int,
    "identity": dict,
    "num_samples": int,
    "chunk_size": int,
}
_OPTIONAL = {
    "rescore_version": str,
    "finished": dict,
    "semantic_names": list,
    "sources": dict,
    "session": dict,
    "boundary_names": list,
    "boundary_wp_names": list,
    "layer_labels": list,
}


def _array_options() -> dict[str, Any]:
    """Codecs of every array a store creates: zstd, then a crc32c checksum of the chunk."""
    return {
        "compressors": (ZstdCodec(level=0), Crc32cCodec()),
        "config": {"write_empty_chunks": True},  # creation only; writers: `_for_writing`
    }


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

    def __init__(self, path: Location, group: zarr.Group) -> None:
        self.path = path
        self.group = group
        meta = dict(group.attrs).get(_ATTR)
        if not isinstance(meta, dict) or "format" not in meta:
            raise StoreError(f"{path} is not a rescore store (no '{_ATTR}' attributes)")
        _check_meta(path, meta)
        self.meta: dict[str, Any] = meta
        self.num_samples = int(meta["num_samples"])
        self.chunk_size = int(meta["chunk_size"])
        self.num_chunks = -(-self.num_samples // self.chunk_size)

    # ---- creation and opening -------------------------------------------------------------

    @classmethod
    def create_or_resume(
        cls,
        path: Location,
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

        Locally, creation happens in a temporary sibling directory that is renamed into place, so
        a store exists whole (metadata, static arrays, empty ledger) or not at all. Object stores
        have no rename: the store is built in place under a ``creating`` marker that the final
        attributes replace (written last), and a creation found interrupted is redone.
        """
        path = as_location(path)
        identity = _normalize(identity)
        if _present(path):
            store = cls.open(path, kind=kind)
            store._check_identity(identity)
            store._requeue_missing()
            return store
        if num_samples <= 0 or chunk_size <= 0:
            raise StoreError(
                f"a store needs num_samples > 0 and chunk_size > 0 (got "
                f"{num_samples}, {chunk_size})"
            )
        content = _Content(kind, identity, num_samples, chunk_size, arrays, static, attrs)
        if isinstance(path, StoreUrl):
            _create_in_place(path, content)
            return cls.open(path, kind=kind)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            content.write(zarr.open_group(staging, mode="w"))
            os.replace(staging, path)
        except OSError as error:
            shutil.rmtree(staging, ignore_errors=True)
            if path.exists():  # another process created it meanwhile: use theirs if it fits
                store = cls.open(path, kind=kind)
                store._check_identity(identity)
                return store
            raise StoreError(
                f"cannot create store {path} ({_reason(error)}); {_fix(error)}"
            ) from error
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.open(path, kind=kind)

    @classmethod
    def open(cls, path: Location | str, *, kind: str, mode: str = "r+") -> ChunkedStore:
        """Open an existing store of the given kind (a local path or an object-store URL),
        checking its format version."""
        path = as_location(path)
        if not _present(path):
            raise StoreError(f"store not found: {path}; run the step that writes it first")
        target = path.zarr_store(read_only=mode == "r") if isinstance(path, StoreUrl) else path
        try:
            group = zarr.open_group(target, mode=mode)
        except Exception as error:  # zarr raises several types for a damaged group
            raise StoreError(f"{path} is not a readable Zarr v3 group ({error})") from error
        store = cls(path, group)
        if store.meta.get("format") != kind:
            raise StoreError(f"{path} holds a '{store.meta.get('format')}' store, not '{kind}'")
        if store.meta.get("format_version") not in READABLE_VERSIONS:
            raise StoreError(
                f"{path} has format version {store.meta.get('format_version')}, this rescore "
                f"reads {', '.join(map(str, READABLE_VERSIONS))}; re-create it with this version"
            )
        return store

    def _requeue_missing(self) -> None:
        """A writer resuming a store redoes completed units whose chunk files are gone."""
        missing = self.missing_chunk_files()
        if missing:
            log.warning(
                "%s: chunk files of %d completed unit(s) are missing (%s); recomputing them",
                self.path,
                len(missing),
                ", ".join(map(str, missing[:8])),
            )
            self.mark_pending(missing)

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
        ledger = self.array(LEDGER)[:]
        if ledger.shape != (self.num_chunks,):
            raise DamagedStoreError(
                f"{self.path}: the ledger has {ledger.shape} entries for {self.num_chunks} chunks; "
                f"the store is damaged, remove it and rerun the command that wrote it"
            )
        return ledger.astype(bool)

    def completed_chunks(self) -> list[int]:
        """Complete chunks, in order."""
        return [int(i) for i in np.flatnonzero(self.completed())]

    def pending_chunks(self) -> list[int]:
        """Chunks not yet complete, in order."""
        return [int(i) for i in np.flatnonzero(~self.completed())]

    def is_complete(self) -> bool:
        return bool(self.completed().all())

    def set_session(self, session: Mapping[str, Any]) -> None:
        """Record who is filling the store (backend, device, executor): the `session` attribute.
        Not part of the identity: the values do not depend on it."""
        meta = dict(self.group.attrs[_ATTR])
        meta["session"] = _normalize(session)
        self.group.attrs[_ATTR] = meta
        self.meta = meta

    def finish(self, info: Mapping[str, Any]) -> None:
        """Record that the writer is done (also when it stopped before the last chunk on purpose,
        e.g. adaptive K met its target); readers accept a finished store as complete."""
        meta = dict(self.group.attrs[_ATTR])
        meta["finished"] = _normalize(info)
        self.group.attrs[_ATTR] = meta
        self.meta = meta

    def require_complete(self, what: str) -> None:
        """Raise if the writer has not finished (a reader must not use a partial store) or a
        completed unit's chunk file is missing."""
        missing = self.missing_chunk_files()
        if missing:
            raise DamagedStoreError(
                f"{self.path}: chunk files of {len(missing)} completed unit(s) are missing "
                f"(chunks {', '.join(map(str, missing[:8]))}); run `rescore check -o "
                f"{self.path.parent}`, then rerun the command that wrote the store"
            )
        pending = self.pending_chunks()
        if pending and "finished" not in self.meta:
            raise StoreError(
                f"{self.path} is incomplete ({len(pending)} of {self.num_chunks} chunks missing); "
                f"rerun the command that writes it to finish it before {what}"
            )

    def write_chunk(self, chunk: int, values: Mapping[str, np.ndarray]) -> None:
        """Write one chunk's rows of each named array, then mark the chunk complete."""
        start, stop = self.chunk_range(chunk)
        try:
            for name, data in values.items():
                array = self._for_writing(name)
                if data.shape[0] != stop - start or tuple(data.shape[1:]) != tuple(array.shape[1:]):
                    raise ValueError(
                        f"chunk {chunk} of '{name}': got {data.shape}, expected "
                        f"({stop - start}, {', '.join(map(str, array.shape[1:]))})"
                    )
                array[start:stop] = data
            self._for_writing(LEDGER)[chunk] = 1
        except OSError as error:  # the ledger entry stays 0: a rerun redoes this chunk
            raise StoreError(
                f"cannot write chunk {chunk} of {self.path} ({_reason(error)}); {_fix(error)}"
            ) from error
        except ValueError:
            raise
        except Exception as error:  # an object store's client errors (network, credentials)
            if not isinstance(self.path, StoreUrl):
                raise
            raise StoreError(
                f"cannot write chunk {chunk} of {self.path} ({_short_error(error)}); check the "
                f"connection and credentials, then rerun the same command to resume"
            ) from error

    def sample_arrays(self) -> list[str]:
        """Names of the arrays chunked along `sample` (written unit by unit), ledger excluded."""
        names = []
        for name in self.array_names():
            if name == LEDGER:
                continue
            dims = self.array(name).metadata.dimension_names or ()
            if dims and dims[0] == "sample":
                names.append(name)
        return names

    def missing_chunk_files(self, chunks: list[int] | None = None) -> list[int]:
        """Units (`chunks`, default: the completed ones) with a chunk file missing on disk.

        Chunk files are listed through zarr's store (a directory, or an object-store prefix).
        Format 2 writes every chunk, so a missing file is damage (a deleted file would otherwise
        read back as fill values). Format 1 stores skipped all-fill chunks: nothing is reported.
        """
        if self.meta.get("format_version", 1) < 2:
            return []
        wanted = self.completed_chunks() if chunks is None else chunks
        missing = []
        arrays = [self.array(name).zarr for name in self.sample_arrays()]
        stored = {array.path: _stored_keys(array) for array in arrays} if wanted else {}
        for chunk in wanted:
            for array in arrays:
                grid = [range(n) for n in array.cdata_shape[1:]]
                keys = (array.metadata.encode_chunk_key((chunk, *rest)) for rest in product(*grid))
                if not all(key in stored[array.path] for key in keys):
                    missing.append(chunk)
                    break
        return missing

    def _for_writing(self, name: str) -> zarr.Array:
        """Array `name` opened so that chunks holding only fill values are written too (a
        runtime setting, not stored: format 2 relies on every chunk file existing)."""
        with zarr.config.set({"array.write_empty_chunks": True}):
            return self.group[name]

    def mark_pending(self, chunks: list[int]) -> None:
        """Set the ledger entries of `chunks` to 0 (damaged units to recompute) and drop the
        writer's `finished` record, so readers wait for the rerun."""
        ledger = self._for_writing(LEDGER)
        for chunk in chunks:
            ledger[chunk] = 0
        meta = dict(self.group.attrs[_ATTR])
        meta.pop("finished", None)
        self.group.attrs[_ATTR] = meta
        self.meta = meta

    def array(self, name: str) -> CheckedArray:
        """A data array of the store by name; reads of damaged chunks raise `DamagedStoreError`."""
        try:
            present = name in self.group
            array = self.group[name] if present else None
        except Exception as error:  # a corrupt zarr.json: zarr raises several types
            raise DamagedStoreError(
                f"{self.path}: the metadata of array '{name}' is unreadable ({_short_error(error)})"
                f"; the store is damaged, remove it and rerun the command that wrote it"
            ) from error
        if array is None:
            raise StoreError(
                f"{self.path} has no array '{name}' (has: {', '.join(self.array_names())})"
            )
        return CheckedArray(self, name, array)

    def has(self, name: str) -> bool:
        return name in self.array_names()

    def array_names(self) -> list[str]:
        """Names of the store's arrays (the ledger included), sorted."""
        try:
            return sorted(self.group.array_keys())
        except Exception as error:  # a member's zarr.json is corrupt
            raise DamagedStoreError(
                f"{self.path}: the metadata of an array is unreadable ({_short_error(error)}); "
                f"the store is damaged, remove it and rerun the command that wrote it"
            ) from error


class CheckedArray:
    """A store's Zarr array whose reads turn a damaged chunk into a `DamagedStoreError` that
    names the store, the array and the chunk. Other attributes (shape, dtype, chunks, ...) are
    the Zarr array's."""

    def __init__(self, store: ChunkedStore, name: str, array: zarr.Array) -> None:
        self._store, self._name, self.zarr = store, name, array

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.zarr, attribute)

    def __getitem__(self, key: Any) -> Any:
        return self._read(lambda: self.zarr[key], key)

    @property
    def oindex(self) -> _CheckedIndexer:
        return _CheckedIndexer(self, self.zarr.oindex)

    def _read(self, read: Any, key: Any) -> Any:
        try:
            return read()
        except Exception as error:  # codec errors: crc32c mismatch, zstd, short buffers, ...
            raise DamagedStoreError(
                f"{self._store.path}: array '{self._name}' is damaged in {self._where(key)} "
                f"({_short_error(error)}); run `rescore check -o "
                f"{self._store.path.parent}` to mark it for recomputation, then rerun"
            ) from error

    def _where(self, key: Any) -> str:
        """Which chunk(s) along the first axis a failed read touched: the damaged ones when
        they can be found by reading chunk by chunk."""
        first = key[0] if isinstance(key, tuple) and key else key
        if not self.zarr.ndim:
            return "its only chunk"
        rows, length = self.zarr.chunks[0], self.zarr.shape[0]
        if isinstance(first, int | np.integer):
            return f"chunk {int(first) % length // rows}"
        if not isinstance(first, slice):
            return "a chunk"
        start, stop, _ = first.indices(length)
        chunks = range(start // rows, max(start, stop - 1) // rows + 1)
        bad = [c for c in chunks if not self._chunk_readable(c)] or list(chunks)
        return f"chunk {bad[0]}" if len(bad) == 1 else f"chunks {', '.join(map(str, bad))}"

    def _chunk_readable(self, chunk: int) -> bool:
        rows = self.zarr.chunks[0]
        try:
            self.zarr[chunk * rows : (chunk + 1) * rows]
        except Exception:  # the damage being located
            return False
        return True


class _CheckedIndexer:
    def __init__(self, array: CheckedArray, indexer: Any) -> None:
        self._array, self._indexer = array, indexer

    def __getitem__(self, key: Any) -> Any:
        return self._array._read(lambda: self._indexer[key], key)


@dataclass(frozen=True)
class _Content:
    """What a new store holds before any chunk is written: arrays, static arrays, the empty
    ledger and the attributes (the attributes last: they mark the store complete)."""

    kind: str
    identity: dict[str, Any]
    num_samples: int
    chunk_size: int
    arrays: list[ArraySpec]
    static: Mapping[str, tuple[np.ndarray, tuple[str, ...]]]
    attrs: Mapping[str, Any]

    def write(self, group: zarr.Group) -> None:
        num_samples, chunk_size = self.num_samples, self.chunk_size
        num_chunks = -(-num_samples // chunk_size)
        for spec in self.arrays:
            inner = spec.inner_chunks or spec.shape[1:]
            group.create_array(
                spec.name,
                shape=(num_samples, *spec.shape[1:]),
                chunks=(min(chunk_size, num_samples), *inner),
                dtype=spec.dtype,
                dimension_names=spec.dims,
                fill_value=np.nan if spec.dtype.startswith("float") else 0,
                **_array_options(),
            )
        for name, (data, dims) in self.static.items():
            group.create_array(
                name, data=np.asarray(data), dimension_names=dims, **_array_options()
            )
        group.create_array(
            LEDGER,
            data=np.zeros(num_chunks, np.uint8),
            chunks=(1,),
            fill_value=0,
            dimension_names=("chunk",),
            **_array_options(),
        )
        group.attrs[_ATTR] = _normalize(
            {
                "format": self.kind,
                "format_version": FORMAT_VERSION,
                "identity": self.identity,
                "num_samples": num_samples,
                "chunk_size": chunk_size,
                "rescore_version": __version__,
                **self.attrs,
            }
        )


_CREATING = {"creating": True}  # an object-store store's attributes until its creation is done


def _create_in_place(path: StoreUrl, content: _Content) -> None:
    """Build a store on an object store, where nothing can be renamed into place: the group's
    zarr.json (written first) carries the `creating` marker until the attributes are written
    last; `_present` treats a marked store as absent, so an interrupted creation is redone."""
    if _remote_state(path) == "interrupted":
        log.warning("%s: an interrupted creation is redone", path)
    try:
        group = zarr.open_group(path.zarr_store(), mode="w", attributes={_ATTR: _CREATING})
        content.write(group)
    except RescoreError:
        raise
    except Exception as error:  # the object store's client errors: no common base class
        raise StoreError(
            f"cannot create store {path} ({_short_error(error)}); check the connection and "
            f"credentials, then rerun the same command (the creation is redone)"
        ) from error


def _present(path: Location) -> bool:
    """Whether a store exists at `path` (on an object store: created to the end)."""
    if isinstance(path, Path):
        return path.exists()
    state = _remote_state(path)
    if state == "foreign":
        raise StoreError(
            f"{path} holds objects but no Zarr group (no zarr.json); it is not a rescore store: "
            f"remove it or choose another --out"
        )
    return state == "present"


def _remote_state(path: StoreUrl) -> str:
    """'absent', 'interrupted' (creation marker still set), 'present', or 'foreign' (objects
    under the prefix but no group metadata: not ours, never overwritten)."""
    try:
        meta = json.loads((path / "zarr.json").read_bytes())
    except FileNotFoundError:
        return "foreign" if path.exists() else "absent"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "present"  # opening it reports the damage
    attributes = meta.get("attributes") if isinstance(meta, dict) else None
    marker = attributes.get(_ATTR) if isinstance(attributes, dict) else None
    return "interrupted" if marker == _CREATING else "present"


def _stored_keys(array: zarr.Array) -> set[str]:
    """Chunk keys of `array` present in its store, relative to the array (one listing)."""
    store, prefix = array.store_path.store, f"{array.store_path.path}/"

    async def collect() -> set[str]:
        return {key[len(prefix) :] async for key in store.list_prefix(prefix)}

    return sync(collect())


def _check_meta(path: Location, meta: dict[str, Any]) -> None:
    """Refuse attributes with missing or mistyped keys (hand-edited or damaged). Unknown keys
    are left alone (newer writers may add some); readers validate the entries they use."""
    for key, kind in _REQUIRED.items():
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            raise StoreError(
                f"{path}: attribute '{key}' is missing or not {kind.__name__}; the store's "
                f"metadata is damaged, remove it and rerun the command that wrote it"
            )
    wrong = [k for k, kind in _OPTIONAL.items() if k in meta and not isinstance(meta[k], kind)]
    if wrong or meta["num_samples"] <= 0 or meta["chunk_size"] <= 0:
        raise StoreError(
            f"{path}: attribute(s) {', '.join(wrong) or 'num_samples/chunk_size'} have the wrong "
            f"type or value; the store's metadata is damaged, remove it and rerun"
        )


def _reason(error: OSError) -> str:
    return f"{error.strerror or error}" + (f": {error.filename}" if error.filename else "")


def _fix(error: OSError) -> str:
    """What to do about an OSError while writing a store."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "free disk space and rerun the same command to resume (finished chunks are kept)"
    return "choose a writable --out, or fix its permissions, and rerun the same command"


def _short_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".splitlines()[0]
    return text if len(text) <= 120 else text[:117] + "..."


def _normalize(value: Any) -> Any:
    """JSON round trip, so stored and fresh metadata compare equal (tuples -> lists, ...)."""
    return json.loads(json.dumps(value, default=str))


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
