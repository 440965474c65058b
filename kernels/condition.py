"""Conditional boundaries: make a primal boundary orthogonal to any number of condition boundaries.

Moving along a conditioned normal changes the primal semantic while leaving the condition
semantics' scores (their signed distances) unchanged. HiGAN/InterFaceGAN write closed forms for
one and two conditions; here the conditions are orthonormalised (modified Gram-Schmidt with
re-orthogonalisation in the numba kernel, an SVD in the reference), their span is projected out
of the primal and the rest renormalised. Works per layer for per-layer boundaries.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from ._dispatch import Impl, float_array, numba_module, resolve

# A primal whose part outside the conditions' span is below this fraction of its norm is treated
# as lying in that span: what is left is rounding noise, not a direction.
DEGENERATE_RESIDUAL = 1e-6
# A condition whose part outside the span of the previous ones is below this fraction of its
# norm adds no direction (it is a linear combination of them) and is skipped.
DEPENDENT_RESIDUAL = 1e-10


class DegenerateConditionError(ValueError):
    """The primal boundary lies in the span of the condition boundaries."""


def condition(primal: np.ndarray, conditions: np.ndarray, *, impl: Impl = "auto") -> np.ndarray:
    """Unit normal orthogonal to every condition, closest to `primal` -> float32, `primal`'s shape.

    primal: [D] or [1, D] (one boundary), or [L, D] / [1, L, D] (per-layer boundary, each layer
    conditioned independently). conditions: [C, D] (applied to every layer) or [C, L, D]; C may be
    0, and linearly dependent conditions are fine. Computed in float64.
    Raises DegenerateConditionError where the primal lies in the conditions' span.
    """
    backend = resolve(impl)
    primal_arr = float_array(primal, "primal", (1, 2, 3), np.float64)
    if primal_arr.ndim == 3 and primal_arr.shape[0] != 1:
        raise ValueError(
            f"primal must be one boundary ([D], [1, D], [L, D] or [1, L, D]), got shape "
            f"{primal_arr.shape}; condition several boundaries one call at a time"
        )
    layers = primal_arr.reshape(-1, primal_arr.shape[-1])  # [L, D]; L = 1 for [D] and [1, D]
    num_layers, dim = layers.shape
    conds = float_array(conditions, "conditions", (2, 3), np.float64)
    if conds.shape[-1] != dim:
        raise ValueError(f"conditions have dimension {conds.shape[-1]} but primal has {dim}")
    if conds.ndim == 2:
        conds = np.repeat(conds[:, None, :], num_layers, axis=1)  # [C, L, D]
    elif conds.shape[1] != num_layers:
        raise ValueError(
            f"conditions have {conds.shape[1]} layers but primal has {num_layers}; "
            f"pass conditions [C, D] or [C, {num_layers}, D]"
        )
    if not (np.isfinite(layers).all() and np.isfinite(conds).all()):
        raise ValueError("primal and conditions must be finite; they hold NaN or inf")
    norms = np.linalg.norm(layers, axis=1)  # [L]
    if not (norms > 0).all():
        raise ValueError(f"primal has zero norm at layer(s) {np.flatnonzero(norms == 0).tolist()}")

    out = np.empty_like(layers)  # [L, D]
    residual = np.empty(num_layers)  # [L] |p - proj(p)| / |p|
    if backend == "numba":
        _compiled()(layers, np.ascontiguousarray(conds), DEPENDENT_RESIDUAL, out, residual)
    else:
        _condition_ref(layers, conds, out, residual)
    _check_degenerate(layers, conds, residual)
    return out.astype(np.float32).reshape(primal_arr.shape)


def _check_degenerate(primal: np.ndarray, conds: np.ndarray, residual: np.ndarray) -> None:
    """Raise DegenerateConditionError naming the first layer whose primal is in the span."""
    bad = np.flatnonzero(residual < DEGENERATE_RESIDUAL)
    if bad.size == 0:
        return
    layer = int(bad[0])
    p = primal[layer] / np.linalg.norm(primal[layer])
    c_norms = np.linalg.norm(conds[:, layer], axis=1)
    cos = np.abs(conds[:, layer] @ p) / np.where(c_norms > 0, c_norms, 1.0)  # [C]
    where = f" at layer {layer}" if primal.shape[0] > 1 else ""
    raise DegenerateConditionError(
        f"the primal boundary lies in the span of the {conds.shape[0]} condition boundaries"
        f"{where} (relative residual {residual[layer]:.1e} < {DEGENERATE_RESIDUAL:g}), so no "
        f"direction is left after conditioning; drop a condition, e.g. condition "
        f"{int(np.argmax(cos))} (|cos| = {cos.max():.3f} with the primal)"
    )


def _condition_ref(
    primal: np.ndarray, conds: np.ndarray, out: np.ndarray, residual: np.ndarray
) -> None:
    """NumPy reference: an orthonormal basis of each layer's conditions from a batched SVD."""
    p = primal / np.linalg.norm(primal, axis=1, keepdims=True)  # [L, D]
    if conds.shape[0] > 0:
        c_norms = np.linalg.norm(conds, axis=2, keepdims=True)  # [C, L, 1]
        unit = conds / np.where(c_norms > 0, c_norms, 1.0)  # [C, L, D]; zero rows stay zero
        _, sing, basis = np.linalg.svd(unit.transpose(1, 0, 2), full_matrices=False)  # [L, r, D]
        keep = sing > DEPENDENT_RESIDUAL * np.maximum(sing[:, :1], 1.0)  # [L, r]
        coeff = np.einsum("lrd,ld->lr", basis, p) * keep  # [L, r]
        p = p - np.einsum("lr,lrd->ld", coeff, basis)  # [L, D]
    residual[:] = np.linalg.norm(p, axis=1)
    out[:] = p / np.where(residual > 0, residual, 1.0)[:, None]


@functools.cache
def _compiled() -> Callable[..., None]:
    """The numba kernel, compiled (or loaded from numba's cache) on first use."""
    numba = numba_module()

    # No prange: a boundary has a few dozen layers at most, so threads would cost more than they
    # save. Scalar loops (no np.dot) keep the compile short.
    @numba.njit(cache=True)
    def condition_numba(primal, conds, dependent, out, residual):
        num_conds, num_layers, dim = conds.shape
        basis = np.empty((num_conds, dim))  # orthonormal rows, `rank` of them in use
        v = np.empty(dim)
        for layer in range(num_layers):
            rank = 0
            # Rows 0 .. C-1 are the conditions (each extends the basis unless dependent), row C
            # is the primal (its remainder is the answer).
            for row in range(num_conds + 1):
                src = conds[row, layer] if row < num_conds else primal[layer]
                norm0 = 0.0
                for d in range(dim):
                    v[d] = src[d]
                    norm0 += v[d] * v[d]
                norm0 = np.sqrt(norm0)
                # Two Gram-Schmidt passes ("twice is enough") leave v orthogonal to the basis to
                # working precision even when it is nearly in the basis' span.
                for _ in range(2):
                    for b in range(rank):
                        dot = 0.0
                        for d in range(dim):
                            dot += basis[b, d] * v[d]
                        for d in range(dim):
                            v[d] -= dot * basis[b, d]
                norm = 0.0
                for d in range(dim):
                    norm += v[d] * v[d]
                norm = np.sqrt(norm)
                if row < num_conds:
                    if norm > dependent * norm0:
                        for d in range(dim):
                            basis[rank, d] = v[d] / norm
                        rank += 1
                else:
                    residual[layer] = norm / norm0
                    for d in range(dim):
                        out[layer, d] = v[d] / norm if norm > 0 else 0.0

    return condition_numba
