"""Signed distances of codes to linear boundaries: X . N^T + b, in memory or streamed from a store.

A boundary is a unit normal n (and an offset b); a code x sits at signed distance x . n + b.
With layer-wise codes each layer's code is measured separately, against one normal shared by all
layers ([M, D]) or against that layer's own normal (per-layer boundaries, [M, L, D]).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._dispatch import (
    Backend,
    Impl,
    RowArray,
    check_out,
    float_array,
    numba_module,
    resolve,
    row_blocks,
)


def project(
    codes: np.ndarray,
    normals: np.ndarray,
    offsets: np.ndarray | None = None,
    *,
    impl: Impl = "auto",
) -> np.ndarray:
    """Signed distances codes . normals^T + offsets, float32.

    codes [N, D],    normals [M, D]    -> [N, M]
    codes [N, L, D], normals [M, D]    -> [N, M, L]  (every layer against the same normal)
    codes [N, L, D], normals [M, L, D] -> [N, M, L]  (layer l against boundary m's layer-l normal)
    offsets: None (zero), [M], or [M, L] (one intercept per per-layer boundary).
    """
    backend = resolve(impl)
    codes = float_array(codes, "codes", (2, 3))
    plan = _plan(codes.shape, normals, offsets)
    out = np.empty(plan.out_shape, np.float32)
    _project_block(codes, plan, out, backend)
    return out


def project_chunks(
    array: RowArray,
    normals: np.ndarray,
    offsets: np.ndarray | None = None,
    *,
    chunk_rows: int = 65536,
    impl: Impl = "auto",
    out: Any = None,
) -> Any:
    """`project` over a row-sliceable array (zarr.Array, ndarray, memmap), `chunk_rows` at a time.

    Memory stays bounded by one block of rows whatever N is (blocks are aligned to a zarr
    array's row chunks). Returns a new ndarray [N, M] / [N, M, L], or `out` after filling it;
    `out` may be an ndarray or anything accepting `out[start:stop] = rows` (a zarr.Array).
    """
    backend = resolve(impl)
    shape = tuple(int(n) for n in array.shape)
    if len(shape) not in (2, 3):
        raise ValueError(f"array must be [N, D] or [N, L, D], got shape {shape}")
    if np.dtype(array.dtype).kind != "f":
        raise ValueError(f"array must hold floating-point codes, got dtype {array.dtype}")
    plan = _plan(shape, normals, offsets)
    if out is None:
        out = np.empty(plan.out_shape, np.float32)
    elif isinstance(out, np.ndarray):
        check_out(out, plan.out_shape)
    elif tuple(out.shape) != plan.out_shape or np.dtype(out.dtype).kind != "f":
        raise ValueError(
            f"out must be a floating-point array of shape {plan.out_shape}, got "
            f"{out.dtype} {tuple(out.shape)}"
        )
    for start, stop in row_blocks(array, chunk_rows):
        rows = float_array(array[start:stop], "array rows", (len(shape),))
        if isinstance(out, np.ndarray):
            _project_block(rows, plan, out[start:stop], backend)
        else:
            block = np.empty((stop - start, *plan.out_shape[1:]), np.float32)
            _project_block(rows, plan, block, backend)
            out[start:stop] = block
    return out


@dataclass(frozen=True)
class _Plan:
    """Boundaries laid out for the kernels: L' is 1 for codes [N, D] and L for codes [N, L, D]."""

    normals: np.ndarray  # [M, L', D] float32, C-contiguous
    offsets: np.ndarray  # [M, L'] float32, C-contiguous
    out_shape: tuple[int, ...]  # [N, M] or [N, M, L]


def _plan(codes_shape: tuple[int, ...], normals: np.ndarray, offsets: np.ndarray | None) -> _Plan:
    """Check the boundaries against the codes' shape; repeat a shared normal per layer.

    Repeating is cheap (M x L x D) and lets one kernel cover every case.
    """
    normals = float_array(normals, "normals", (2, 3))
    num = normals.shape[0]
    dim = codes_shape[-1]
    if normals.shape[-1] != dim:
        raise ValueError(
            f"normals have dimension {normals.shape[-1]} but codes have {dim}; "
            "were the boundaries fitted on another space (z vs w)?"
        )
    if len(codes_shape) == 2:
        if normals.ndim == 3:
            raise ValueError(
                f"per-layer normals {normals.shape} need layer-wise codes [N, L, D], got "
                f"codes {codes_shape}; repeat the codes per layer or pass normals [M, D]"
            )
        num_layers, out_shape = 1, (codes_shape[0], num)
        normals = normals[:, None, :]  # [M, 1, D]
    else:
        num_layers, out_shape = codes_shape[1], (codes_shape[0], num, codes_shape[1])
        if normals.ndim == 2:
            normals = np.repeat(normals[:, None, :], num_layers, axis=1)  # [M, L, D]
        elif normals.shape[1] != num_layers:
            raise ValueError(
                f"normals have {normals.shape[1]} layers but codes have {num_layers}; "
                "pass per-layer normals [M, L, D] with the codes' L, or normals [M, D]"
            )
    if offsets is None:
        offsets = np.zeros((num, num_layers), np.float32)
    else:
        offsets = float_array(offsets, "offsets", (1, 2))
        allowed = [(num,), (num, num_layers)] if len(codes_shape) == 3 else [(num,)]
        if offsets.shape not in allowed:
            raise ValueError(
                f"offsets must have shape {' or '.join(map(str, allowed))} (one per "
                f"boundary{', or per boundary and layer' if len(allowed) > 1 else ''}), "
                f"got {offsets.shape}"
            )
        offsets = np.array(np.broadcast_to(offsets.reshape(num, -1), (num, num_layers)))  # [M, L']
    return _Plan(normals, offsets, out_shape)


def _project_block(codes: np.ndarray, plan: _Plan, out: np.ndarray, backend: Backend) -> None:
    """Fill out [n, M] / [n, M, L] for codes [n, D] / [n, L, D] (C-contiguous float32)."""
    codes3 = codes.reshape(codes.shape[0], *plan.normals.shape[1:])  # [n, L', D]
    out3 = out.reshape(codes.shape[0], *plan.offsets.shape)  # [n, M, L'], a view
    if backend == "numba":
        _compiled()(codes3, plan.normals, plan.offsets, out3)
    else:
        _project_ref(codes3, plan.normals, plan.offsets, out3)


def _project_ref(
    codes: np.ndarray, normals: np.ndarray, offsets: np.ndarray, out: np.ndarray
) -> None:
    """NumPy reference: one BLAS matrix product per layer."""
    per_layer = np.matmul(codes.transpose(1, 0, 2), normals.transpose(1, 2, 0))  # [L', n, M]
    np.add(per_layer.transpose(1, 2, 0), offsets, out=out)  # [n, M, L']


@functools.cache
def _compiled() -> Callable[..., None]:
    """The numba kernel, compiled (or loaded from numba's cache) on first use."""
    numba = numba_module()

    # fastmath lets LLVM vectorise the float32 dot product (reassociating the sum); its error is
    # of the same order as BLAS's float32 sgemm used by the reference.
    @numba.njit(parallel=True, fastmath=True, cache=True)
    def project_numba(codes, normals, offsets, out):
        num_codes, num_layers, dim = codes.shape
        num = normals.shape[0]
        for n in numba.prange(num_codes):
            for m in range(num):
                for layer in range(num_layers):
                    acc = np.float32(0.0)
                    for d in range(dim):
                        acc += codes[n, layer, d] * normals[m, layer, d]
                    out[n, m, layer] = acc + offsets[m, layer]

    return project_numba
