"""Atomic output files: a reader (or a kill) never sees half a file.

Every output is written to a temporary sibling ``.<stem>.<hex>.tmp<suffix>`` in the same
directory and renamed over the target with `os.replace` (atomic within one file system).
A kill leaves at most the temporary file; `clean_leftovers` removes stale ones on the next run.
A target on an object store (`location.StoreUrl`) is written to a local temporary file, then
uploaded as one object: object stores show an object whole or not at all.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from .location import Location, StoreUrl

# Leftovers younger than this may belong to a writer still running in another process.
STALE_SECONDS = 600.0
_PATTERNS = (".*.partial", ".*.tmp", ".*.tmp.*", ".export-*", ".write-test-*")


@contextlib.contextmanager
def atomic_path(path: Location) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, else delete it.

    For writers that want a file name (matplotlib's savefig, PIL's save): write to the yielded
    path, which keeps `path`'s suffix so format detection by extension still works.
    """
    if isinstance(path, StoreUrl):
        with tempfile.TemporaryDirectory(prefix="rescore-") as scratch:
            staged = Path(scratch) / path.name
            yield staged
            path.upload(staged)
        return
    path = Path(path)
    staged = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")
    try:
        yield staged
        os.replace(staged, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(staged)


def write_bytes_atomic(path: Location, data: bytes) -> Location:
    """Write `data` to `path` atomically; returns `path`."""
    if isinstance(path, StoreUrl):
        path.write_bytes(data)
        return path
    with atomic_path(path) as staged:
        staged.write_bytes(data)
    return Path(path)


def write_text_atomic(path: Location, text: str) -> Location:
    """Write UTF-8 `text` to `path` atomically; returns `path`."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def clean_leftovers(directory: Path, *, older_than: float = STALE_SECONDS) -> list[Path]:
    """Remove what killed writers left in `directory` (not recursive): staging stores
    (``.<store>.<hex>.partial``), temporary files (``.*.tmp``) and export scratch directories
    (``.export-*``) last modified more than `older_than` seconds ago. Returns what was removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    now, removed = time.time(), []
    for pattern in _PATTERNS:
        for leftover in directory.glob(pattern):
            try:
                if now - leftover.lstat().st_mtime < older_than:
                    continue
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover)
                else:
                    leftover.unlink()
            except OSError:
                continue  # not ours to remove (permissions) or removed meanwhile
            removed.append(leftover)
    return removed
