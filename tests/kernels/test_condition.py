"""Conditioning: unit vectors orthogonal to every condition, HiGAN's closed forms, degeneracy."""

from __future__ import annotations

import numpy as np
import pytest

from rescore.kernels import DegenerateConditionError, condition

IMPLS = ("ref", "numba")


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    x = rng.standard_normal(shape)
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def _higan_one(p: np.ndarray, c: np.ndarray) -> np.ndarray:
    """HiGAN/InterFaceGAN, one unit condition: p - (p.c) c, normalised."""
    p, c = p.astype(np.float64), c.astype(np.float64)
    out = p - (p @ c) * c
    return out / np.linalg.norm(out)


def _higan_two(p: np.ndarray, c1: np.ndarray, c2: np.ndarray) -> np.ndarray:
    """HiGAN/InterFaceGAN, two unit conditions, with their 1e-8 in the denominator."""
    p, c1, c2 = (v.astype(np.float64) for v in (p, c1, c2))
    pc1, pc2, c1c2 = p @ c1, p @ c2, c1 @ c2
    alpha = (pc1 - pc2 * c1c2) / (1 - c1c2**2 + 1e-8)
    beta = (pc2 - pc1 * c1c2) / (1 - c1c2**2 + 1e-8)
    out = p - alpha * c1 - beta * c2
    return out / np.linalg.norm(out)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("num_conditions", [1, 2, 5, 20])
def test_unit_and_orthogonal_to_every_condition(impl: str, num_conditions: int) -> None:
    rng = np.random.default_rng(num_conditions)
    primal = _unit(rng, 1, 512)
    conds = rng.standard_normal((num_conditions, 512)).astype(np.float32) * 3  # not unit
    got = condition(primal, conds, impl=impl)
    assert got.shape == (1, 512) and got.dtype == np.float32
    assert abs(np.linalg.norm(got.astype(np.float64)) - 1) < 1e-6
    unit_conds = conds / np.linalg.norm(conds, axis=1, keepdims=True)
    assert np.abs(unit_conds.astype(np.float64) @ got[0].astype(np.float64)).max() < 1e-6
    assert float(got[0] @ primal[0]) > 0  # still points the primal's way


@pytest.mark.parametrize("impl", IMPLS)
def test_equals_higan_closed_forms(impl: str) -> None:
    rng = np.random.default_rng(10)
    primal, c1, c2 = _unit(rng, 3, 512)
    c2 = (c2 + 0.6 * c1) / np.linalg.norm(c2 + 0.6 * c1)  # correlated conditions
    one = condition(primal, c1[None], impl=impl)
    np.testing.assert_allclose(one, _higan_one(primal, c1), atol=1e-6)
    two = condition(primal, np.stack([c1, c2]), impl=impl)
    np.testing.assert_allclose(two, _higan_two(primal, c1, c2), atol=1e-6)


@pytest.mark.parametrize("num_conditions", [0, 1, 3, 20])
def test_numba_equals_ref(num_conditions: int) -> None:
    rng = np.random.default_rng(20 + num_conditions)
    primal, conds = _unit(rng, 6, 64), _unit(rng, num_conditions, 6, 64)
    np.testing.assert_allclose(
        condition(primal, conds, impl="numba"), condition(primal, conds, impl="ref"), atol=1e-6
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_dependent_conditions_change_nothing(impl: str) -> None:
    rng = np.random.default_rng(30)
    primal, c1, c2 = _unit(rng, 3, 128).astype(np.float64)
    redundant = np.stack([c1, c2, c1 + c2, 2 * c1, np.zeros(128), c2])
    want = condition(primal, np.stack([c1, c2]), impl=impl)
    np.testing.assert_allclose(condition(primal, redundant, impl=impl), want, atol=1e-6)


@pytest.mark.parametrize("impl", IMPLS)
def test_primal_in_the_span_raises(impl: str) -> None:
    rng = np.random.default_rng(40)
    conds = _unit(rng, 3, 64)
    primal = 0.5 * conds[0] - 2.0 * conds[2]
    with pytest.raises(DegenerateConditionError, match="span.*drop a condition"):
        condition(primal, conds, impl=impl)
    with pytest.raises(ValueError):  # DegenerateConditionError is a ValueError
        condition(conds[1], conds, impl=impl)


@pytest.mark.parametrize("impl", IMPLS)
def test_per_layer_boundaries_are_conditioned_layer_by_layer(impl: str) -> None:
    rng = np.random.default_rng(50)
    primal, conds = _unit(rng, 1, 4, 32), _unit(rng, 2, 4, 32)
    got = condition(primal, conds, impl=impl)
    assert got.shape == (1, 4, 32)
    for layer in range(4):
        one = condition(primal[0, layer], conds[:, layer], impl=impl)
        np.testing.assert_allclose(got[0, layer], one, atol=1e-6)
    shared = condition(primal[0], conds[:, 0], impl=impl)  # [L, D] with [C, D]: every layer
    for layer in range(4):
        np.testing.assert_allclose(
            shared[layer], _higan_two(primal[0, layer], *conds[:, 0]), atol=1e-6
        )


@pytest.mark.parametrize("impl", IMPLS)
def test_degenerate_layer_is_named(impl: str) -> None:
    rng = np.random.default_rng(60)
    conds = _unit(rng, 2, 3, 16)
    primal = _unit(rng, 3, 16)
    primal[2] = conds[1, 2]
    with pytest.raises(DegenerateConditionError, match="at layer 2"):
        condition(primal, conds, impl=impl)


def test_rejects_bad_shapes() -> None:
    rng = np.random.default_rng(70)
    with pytest.raises(ValueError, match="dimension"):
        condition(_unit(rng, 8), _unit(rng, 2, 9), impl="ref")
    with pytest.raises(ValueError, match="layers"):
        condition(_unit(rng, 3, 8), _unit(rng, 2, 4, 8), impl="ref")
    with pytest.raises(ValueError, match="one boundary"):
        condition(_unit(rng, 2, 3, 8), _unit(rng, 2, 8), impl="ref")
    with pytest.raises(ValueError, match="zero norm"):
        condition(np.zeros(8, np.float32), _unit(rng, 2, 8), impl="ref")
