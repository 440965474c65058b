"""Signed distances: both backends equal a float64 X . N^T + b; streaming equals in-memory."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from rescore.kernels import project, project_chunks

IMPLS = ("ref", "numba")
TOL = {"rtol": 1e-5, "atol": 1e-4}


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _exact(codes: np.ndarray, normals: np.ndarray, offsets: np.ndarray | None) -> np.ndarray:
    """Float64 distances written per case from the definition."""
    c, n = codes.astype(np.float64), normals.astype(np.float64)
    b = 0.0 if offsets is None else offsets.astype(np.float64)
    if codes.ndim == 2:
        return c @ n.T + b  # [N, M]
    if normals.ndim == 2:
        dist = np.einsum("nld,md->nml", c, n)
    else:
        dist = np.einsum("nld,mld->nml", c, n)
    return dist + (b[:, None] if np.ndim(b) == 1 else b)  # [N, M, L]


CASES = [  # (codes shape, normals shape, offsets shape)
    ((37, 16), (3, 16), None),
    ((37, 16), (3, 16), (3,)),
    ((20, 5, 16), (4, 16), (4,)),
    ((20, 5, 16), (4, 5, 16), (4,)),
    ((20, 5, 16), (4, 5, 16), (4, 5)),
    ((1, 14, 512), (2, 14, 512), None),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("codes_shape", "normals_shape", "offsets_shape"), CASES)
def test_equals_float64_definition(impl, codes_shape, normals_shape, offsets_shape) -> None:
    rng = np.random.default_rng(len(codes_shape) * 10 + len(normals_shape))
    codes, normals = _rand(rng, *codes_shape), _rand(rng, *normals_shape)
    offsets = None if offsets_shape is None else _rand(rng, *offsets_shape)
    got = project(codes, normals, offsets, impl=impl)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, _exact(codes, normals, offsets), **TOL)


@pytest.mark.parametrize(("codes_shape", "normals_shape", "offsets_shape"), CASES)
def test_numba_equals_ref(codes_shape, normals_shape, offsets_shape) -> None:
    rng = np.random.default_rng(sum(codes_shape))
    codes, normals = _rand(rng, *codes_shape), _rand(rng, *normals_shape)
    offsets = None if offsets_shape is None else _rand(rng, *offsets_shape)
    np.testing.assert_allclose(
        project(codes, normals, offsets, impl="numba"),
        project(codes, normals, offsets, impl="ref"),
        **TOL,
    )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layered", [False, True])
def test_chunks_over_zarr_equal_in_memory(tmp_path, impl: str, layered: bool) -> None:
    rng = np.random.default_rng(5)
    shape = (103, 3, 8) if layered else (103, 8)
    codes = _rand(rng, *shape)
    normals, offsets = _rand(rng, 2, *shape[1:]), _rand(rng, 2)
    store = zarr.create_array(
        store=tmp_path / "codes.zarr", shape=shape, chunks=(10, *shape[1:]), dtype="float32"
    )
    store[:] = codes
    want = project(codes, normals, offsets, impl="ref")
    for chunk_rows in (7, 25, 1000):
        got = project_chunks(store, normals, offsets, chunk_rows=chunk_rows, impl=impl)
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("impl", IMPLS)
def test_chunks_write_into_zarr_and_ndarray_out(tmp_path, impl: str) -> None:
    rng = np.random.default_rng(6)
    codes, normals = _rand(rng, 50, 4, 8), _rand(rng, 3, 4, 8)
    memmap = np.lib.format.open_memmap(tmp_path / "codes.npy", "w+", np.float32, codes.shape)
    memmap[:] = codes
    want = project(codes, normals, impl="ref")
    into_zarr = zarr.create_array(
        store=tmp_path / "dist.zarr", shape=want.shape, chunks=(9, 3, 4), dtype="float32"
    )
    assert project_chunks(memmap, normals, chunk_rows=9, impl=impl, out=into_zarr) is into_zarr
    np.testing.assert_allclose(into_zarr[:], want, **TOL)
    into_array = np.full(want.shape, np.nan, np.float32)
    project_chunks(memmap, normals, chunk_rows=16, impl=impl, out=into_array)
    np.testing.assert_allclose(into_array, want, **TOL)


def test_rejects_mismatched_boundaries() -> None:
    rng = np.random.default_rng(0)
    flat, layered = _rand(rng, 4, 8), _rand(rng, 4, 3, 8)
    with pytest.raises(ValueError, match="dimension"):
        project(flat, _rand(rng, 2, 7), impl="ref")
    with pytest.raises(ValueError, match="layer-wise codes"):
        project(flat, _rand(rng, 2, 3, 8), impl="ref")
    with pytest.raises(ValueError, match="layers"):
        project(layered, _rand(rng, 2, 5, 8), impl="ref")
    with pytest.raises(ValueError, match="offsets"):
        project(flat, _rand(rng, 2, 8), _rand(rng, 2, 3), impl="ref")
    with pytest.raises(ValueError, match="shape"):
        project_chunks(flat, _rand(rng, 2, 8), impl="ref", out=np.empty((4, 3), np.float32))
