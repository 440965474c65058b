"""Streaming top/bottom-k equals a full stable sort, ties and NaNs included, over real zarr."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from rescore.kernels import select_top_bottom

IMPLS = ("ref", "numba")


def _sorted_expectation(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, int]:
    """What a full stable sort of the finite scores gives."""
    finite = np.flatnonzero(np.isfinite(x))
    top = finite[np.argsort(-x[finite], kind="stable")[:k]]
    bottom = finite[np.argsort(x[finite], kind="stable")[:k]]
    return top, bottom, x.size - finite.size


def _tied_scores(rng: np.random.Generator, n: int) -> np.ndarray:
    """Few distinct values (many ties), about 10% NaN and a few +-inf."""
    x = (rng.integers(-10, 10, n) / 4).astype(np.float32)
    x[rng.random(n) < 0.1] = np.nan
    x[rng.integers(0, n, 3)] = np.inf
    x[rng.integers(0, n, 3)] = -np.inf
    return x


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("k", [1, 17, 200])
def test_equals_stable_full_sort_over_zarr(tmp_path, impl: str, ties: bool, k: int) -> None:
    rng = np.random.default_rng(k + 1000 * ties)
    n = 1003
    x = _tied_scores(rng, n) if ties else rng.standard_normal(n, dtype=np.float32)
    store = zarr.create_array(store=tmp_path / "s.zarr", shape=(n,), chunks=(64,), dtype="f4")
    store[:] = x
    top, bottom, nonfinite = _sorted_expectation(x, k)
    for chunk_rows in (50, 130, 10_000):
        sel = select_top_bottom(store, k, chunk_rows=chunk_rows, impl=impl)
        np.testing.assert_array_equal(sel.top, top)
        np.testing.assert_array_equal(sel.bottom, bottom)
        assert sel.nonfinite == nonfinite
        assert sel.top.dtype == sel.bottom.dtype == np.int64


@pytest.mark.parametrize("impl", IMPLS)
def test_ties_before_a_larger_score_keep_the_smaller_index(impl: str) -> None:
    x = np.array([0, 0, 0, 1, 5, -3, -3, -3, -4], np.float32)
    sel = select_top_bottom(x, 2, chunk_rows=2, impl=impl)
    np.testing.assert_array_equal(sel.top, [4, 3])
    np.testing.assert_array_equal(sel.bottom, [8, 5])
    sel = select_top_bottom(x, 3, chunk_rows=100, impl=impl)
    np.testing.assert_array_equal(sel.top, [4, 3, 0])
    np.testing.assert_array_equal(sel.bottom, [8, 5, 6])


@pytest.mark.parametrize("impl", IMPLS)
def test_many_small_tied_cases_equal_the_sort(impl: str) -> None:
    rng = np.random.default_rng(8)
    for _ in range(300):
        n = int(rng.integers(2, 60))
        x = rng.integers(0, 4, n).astype(np.float32)
        x[rng.random(n) < 0.15] = np.nan
        finite = int(np.isfinite(x).sum())
        if finite < 2:
            continue
        k = int(rng.integers(1, finite // 2 + 1))
        top, bottom, _ = _sorted_expectation(x, k)
        sel = select_top_bottom(x, k, chunk_rows=int(rng.integers(1, n + 1)), impl=impl)
        np.testing.assert_array_equal(sel.top, top)
        np.testing.assert_array_equal(sel.bottom, bottom)


@pytest.mark.parametrize("impl", IMPLS)
def test_picks_a_column_of_a_2d_store(tmp_path, impl: str) -> None:
    rng = np.random.default_rng(3)
    scores = np.stack([_tied_scores(rng, 501) for _ in range(3)], axis=1)  # [N, S]
    store = zarr.create_array(
        store=tmp_path / "s.zarr", shape=scores.shape, chunks=(40, 3), dtype="f4"
    )
    store[:] = scores
    for column in range(3):
        top, bottom, nonfinite = _sorted_expectation(scores[:, column], 30)
        sel = select_top_bottom(store, 30, column=column, chunk_rows=77, impl=impl)
        np.testing.assert_array_equal(sel.top, top)
        np.testing.assert_array_equal(sel.bottom, bottom)
        assert sel.nonfinite == nonfinite


@pytest.mark.parametrize("impl", IMPLS)
def test_all_equal_scores_go_in_index_order(impl: str) -> None:
    sel = select_top_bottom(np.zeros(100, np.float32), 50, chunk_rows=7, impl=impl)
    np.testing.assert_array_equal(sel.top, np.arange(50))
    np.testing.assert_array_equal(sel.bottom, np.arange(50))


@pytest.mark.parametrize("impl", IMPLS)
def test_integer_and_float64_scores(impl: str) -> None:
    rng = np.random.default_rng(4)
    for x in (rng.integers(0, 5, 300), rng.standard_normal(300)):
        top, bottom, _ = _sorted_expectation(x.astype(np.float64), 40)
        sel = select_top_bottom(x, 40, chunk_rows=33, impl=impl)
        np.testing.assert_array_equal(sel.top, top)
        np.testing.assert_array_equal(sel.bottom, bottom)


@pytest.mark.parametrize("impl", IMPLS)
def test_too_few_finite_scores_says_how_many(impl: str) -> None:
    x = np.full(100, np.nan, np.float32)
    x[:15] = np.arange(15)
    with pytest.raises(ValueError, match="only 15 of 100 scores are finite"):
        select_top_bottom(x, 8, impl=impl)
    with pytest.raises(ValueError, match="fewer than 2k = 200"):
        select_top_bottom(x, 100, impl=impl)


def test_rejects_bad_arguments() -> None:
    scores = np.zeros((10, 2), np.float32)
    with pytest.raises(ValueError, match="column="):
        select_top_bottom(scores, 2, impl="ref")
    with pytest.raises(ValueError, match="out of range"):
        select_top_bottom(scores, 2, column=2, impl="ref")
    with pytest.raises(ValueError, match="positive int"):
        select_top_bottom(scores[:, 0], 0, impl="ref")
    with pytest.raises(ValueError, match="real numbers"):
        select_top_bottom(np.zeros(10, bool), 2, impl="ref")
