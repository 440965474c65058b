"""Manipulation batches: numba equals the reference, both equal a plain loop, layer sets obeyed."""

from __future__ import annotations

import numpy as np
import pytest

from rescore.kernels import layer_sets_all_and_each, manipulate

IMPLS = ("ref", "numba")


def _inputs(seed: int, num_codes: int, num_layers: int, dim: int, layered: bool):
    rng = np.random.default_rng(seed)
    shape = (num_codes, num_layers, dim) if layered else (num_codes, dim)
    codes = rng.standard_normal(shape, dtype=np.float32)
    directions = rng.standard_normal((3, num_layers, dim), dtype=np.float32)
    layer_sets = rng.random((5, num_layers)) < 0.5
    return codes, directions, layer_sets


def _loop(codes, directions, layer_sets, distance):
    """out[m, k, n, l] written one element row at a time, straight from the definition."""
    num_dirs, num_layers, dim = directions.shape
    out = np.empty((num_dirs, len(layer_sets), len(codes), num_layers, dim), np.float32)
    for m in range(num_dirs):
        for k in range(len(layer_sets)):
            for n in range(len(codes)):
                for layer in range(num_layers):
                    code = codes[n] if codes.ndim == 2 else codes[n, layer]
                    if layer_sets[k, layer]:
                        step = np.float32(distance) * directions[m, layer]
                        out[m, k, n, layer] = code + step
                    else:
                        out[m, k, n, layer] = code
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("layered", [False, True])
def test_matches_a_direct_loop(impl: str, layered: bool) -> None:
    codes, directions, layer_sets = _inputs(3, 4, 5, 6, layered)
    got = manipulate(codes, directions, layer_sets, -2.5, impl=impl)
    np.testing.assert_array_equal(got, _loop(codes, directions, layer_sets, -2.5))


@pytest.mark.parametrize("layered", [False, True])
@pytest.mark.parametrize(("num_codes", "num_layers", "dim"), [(1, 1, 3), (7, 14, 32), (33, 3, 5)])
def test_numba_equals_ref(layered: bool, num_codes: int, num_layers: int, dim: int) -> None:
    seed = num_codes * 100 + num_layers
    codes, directions, layer_sets = _inputs(seed, num_codes, num_layers, dim, layered)
    want = manipulate(codes, directions, layer_sets, 2.0, impl="ref")
    got = manipulate(codes, directions, layer_sets, 2.0, impl="numba")
    np.testing.assert_array_equal(got, want)


def test_layer_sets_all_and_each() -> None:
    want = [[1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    np.testing.assert_array_equal(layer_sets_all_and_each(3), np.array(want, bool))


@pytest.mark.parametrize("impl", IMPLS)
def test_all_and_each_moves_exactly_the_chosen_layers(impl: str) -> None:
    rng = np.random.default_rng(7)
    codes = rng.standard_normal((2, 4, 8), dtype=np.float32)
    directions = rng.standard_normal((1, 4, 8), dtype=np.float32) + 3.0  # no zero components
    out = manipulate(codes, directions, layer_sets_all_and_each(4), 1.0, impl=impl)[0]
    moved = np.any(out != codes[None], axis=-1)  # [K, N, L]
    assert moved[0].all()
    for layer in range(4):
        assert moved[1 + layer, :, layer].all()
        assert not np.delete(moved[1 + layer], layer, axis=1).any()


@pytest.mark.parametrize("impl", IMPLS)
def test_fills_the_given_out(impl: str) -> None:
    codes, directions, layer_sets = _inputs(11, 3, 2, 4, True)
    out = np.full((3, 5, 3, 2, 4), np.nan, np.float32)
    assert manipulate(codes, directions, layer_sets, 1.0, impl=impl, out=out) is out
    np.testing.assert_array_equal(out, _loop(codes, directions, layer_sets, 1.0))


def test_rejects_mismatched_inputs() -> None:
    codes, directions, layer_sets = _inputs(0, 3, 4, 5, True)
    with pytest.raises(ValueError, match="layers"):
        manipulate(codes[:, :3], directions, layer_sets, 1.0, impl="ref")
    with pytest.raises(ValueError, match="dimension"):
        manipulate(codes[..., :4], directions, layer_sets, 1.0, impl="ref")
    with pytest.raises(ValueError, match=r"astype\(bool\)"):
        manipulate(codes, directions, layer_sets.astype(int), 1.0, impl="ref")
    with pytest.raises(ValueError, match="one column per layer"):
        manipulate(codes, directions, layer_sets[:, :2], 1.0, impl="ref")
    with pytest.raises(ValueError, match="finite"):
        manipulate(codes, directions, layer_sets, float("nan"), impl="ref")
    with pytest.raises(ValueError, match="np.empty"):
        manipulate(codes, directions, layer_sets, 1.0, impl="ref", out=np.empty(3, np.float32))
