"""Pick a kernel backend (numba or the NumPy reference) and check inputs the same way everywhere.

Every public kernel takes `impl: Impl`. `"ref"` always works; `"numba"` gives numba or raises
`NumbaUnavailableError`; `"auto"` gives numba when it imports and otherwise the reference, and
logs once per process which one runs. numba is only ever imported through `numba_module()`, so
`rescore.kernels` imports (and the reference path runs) where numba is not installed.
"""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Iterator
from types import ModuleType
from typing import Any, Literal, Protocol

import numpy as np

Impl = Literal["auto", "numba", "ref"]
Backend = Literal["numba", "ref"]
_IMPLS: tuple[str, ...] = ("auto", "numba", "ref")


class RowArray(Protocol):
    """What streaming kernels read from: a zarr.Array, numpy array or memmap sliced by rows."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...

    def __getitem__(self, key: Any) -> Any: ...


logger = logging.getLogger("rescore.kernels")


class NumbaUnavailableError(ImportError):
    """`impl="numba"` was asked for but numba cannot be imported."""


def numba_module() -> ModuleType:
    """Import numba, or raise `NumbaUnavailableError` saying how to get a working path."""
    try:
        return importlib.import_module("numba")
    except ImportError as exc:
        raise NumbaUnavailableError(
            f"impl='numba' was requested but numba cannot be imported ({exc}); install it "
            "(pip install numba) or pass impl='ref' (NumPy) or impl='auto' (numba when present)"
        ) from exc


def resolve(impl: str) -> Backend:
    """Map the user's `impl` to the backend that will run."""
    if impl == "ref":
        return "ref"
    if impl == "numba":
        numba_module()
        return "numba"
    if impl == "auto":
        try:
            numba = numba_module()
        except NumbaUnavailableError as exc:
            _announce("ref", f"numba is not importable ({exc.__cause__}); using NumPy reference")
            return "ref"
        _announce("numba", f"using numba {numba.__version__} kernels")
        return "numba"
    raise ValueError(f"unknown impl {impl!r}; pass one of {', '.join(map(repr, _IMPLS))}")


@functools.cache
def _announce(backend: Backend, message: str) -> None:
    """Log the backend chosen by `impl="auto"`, once per process and backend."""
    logger.info("rescore.kernels (impl='auto'): %s", message)


def float_array(
    x: object, name: str, ndims: tuple[int, ...], dtype: type = np.float32
) -> np.ndarray:
    """`x` as a C-contiguous array of `dtype`, after checking it is real floating with `ndims` dims.

    float16/float64 inputs are converted (one copy); integer, bool or object data is refused since
    it almost always means the wrong array was passed.
    """
    arr = np.asarray(x)
    if arr.dtype.kind != "f":
        raise ValueError(
            f"{name} must hold floating-point values, got dtype {arr.dtype}; "
            f"pass {name}.astype(np.float32)"
        )
    if arr.ndim not in ndims:
        wanted = " or ".join(f"{n}-D" for n in ndims)
        raise ValueError(f"{name} must be {wanted}, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_out(out: np.ndarray, shape: tuple[int, ...], name: str = "out") -> np.ndarray:
    """Check a caller-provided output buffer: a C-contiguous float32 ndarray of `shape`."""
    if not isinstance(out, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(
            f"{name} must be a C-contiguous float32 array of shape {shape}, got "
            f"{out.dtype} {out.shape} (contiguous={out.flags.c_contiguous}); "
            f"allocate it with np.empty({shape}, dtype=np.float32)"
        )
    return out


def check_chunk_rows(chunk_rows: int) -> None:
    """Refuse a non-positive or non-integer block size."""
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int | np.integer):
        raise ValueError(f"chunk_rows must be an int, got {type(chunk_rows).__name__}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")


def row_blocks(array: RowArray, chunk_rows: int) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of at most `chunk_rows` rows covering `array`.

    Where the array is chunked along rows (a zarr.Array), blocks are rounded down to whole
    storage chunks (never below one) so no storage chunk is decoded twice.
    """
    check_chunk_rows(chunk_rows)
    n_rows = int(array.shape[0])
    storage = getattr(array, "chunks", None)
    if isinstance(storage, tuple) and storage and isinstance(storage[0], int | np.integer):
        step = int(storage[0])
        chunk_rows = max(step, chunk_rows // step * step)
    for start in range(0, n_rows, chunk_rows):
        yield start, min(start + chunk_rows, n_rows)
