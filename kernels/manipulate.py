"""Manipulation batches: move every code along every boundary, on every set of layers at once.

HiGAN re-scoring pushes each latent a fixed distance along each boundary, either on all layers
or on one layer at a time, and compares the predictor scores before and after. This kernel builds
that whole batch, [M boundaries, K layer sets, N codes, L layers, D], in one pass.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np

from ._dispatch import Impl, check_out, float_array, numba_module, resolve


def layer_sets_all_and_each(num_layers: int) -> np.ndarray:
    """The rescoring default, bool [L+1, L]: row 0 moves all layers, row 1 + l only layer l."""
    if isinstance(num_layers, bool) or not isinstance(num_layers, int | np.integer):
        raise ValueError(f"num_layers must be an int, got {type(num_layers).__name__}")
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    return np.concatenate([np.ones((1, num_layers), bool), np.eye(num_layers, dtype=bool)])


def manipulate(
    codes: np.ndarray,
    directions: np.ndarray,
    layer_sets: np.ndarray,
    distance: float,
    *,
    impl: Impl = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Codes moved `distance` along each direction on each layer set -> float32 [M, K, N, L, D].

    out[m, k, n, l] = codes[n, l] + distance * directions[m, l] where layer_sets[k, l], else
    codes[n, l].

    codes: [N, D] (the same code on every layer) or [N, L, D] (layer-wise wp codes).
    directions: [M, L, D] per boundary and layer, already scaled by any per-layer strength.
    layer_sets: bool [K, L], which layers each manipulation moves (see `layer_sets_all_and_each`).
    out: optional C-contiguous float32 [M, K, N, L, D] buffer to fill and return.
    """
    backend = resolve(impl)
    codes = float_array(codes, "codes", (2, 3))
    directions = float_array(directions, "directions", (3,))
    num_dirs, num_layers, dim = directions.shape
    if codes.ndim == 2:
        codes = codes[:, None, :]  # [N, 1, D]: one code shared by all layers
    elif codes.shape[1] != num_layers:
        raise ValueError(
            f"codes have {codes.shape[1]} layers but directions have {num_layers}; "
            "pass codes [N, D] or [N, L, D] with the directions' L"
        )
    if codes.shape[2] != dim:
        raise ValueError(f"codes have dimension {codes.shape[2]} but directions have {dim}")
    layer_sets = np.asarray(layer_sets)
    if layer_sets.dtype != np.bool_:
        raise ValueError(
            f"layer_sets must be bool, got {layer_sets.dtype}; pass layer_sets.astype(bool)"
        )
    if layer_sets.ndim != 2 or layer_sets.shape[1] != num_layers:
        raise ValueError(
            f"layer_sets must be bool [K, {num_layers}] (one column per layer), "
            f"got shape {layer_sets.shape}"
        )
    if isinstance(distance, bool) or not isinstance(
        distance, int | float | np.integer | np.floating
    ):
        raise ValueError(f"distance must be a real number, got {type(distance).__name__}")
    if not math.isfinite(distance):
        raise ValueError(f"distance must be finite, got {distance}")
    layer_sets = np.ascontiguousarray(layer_sets)
    shape = (num_dirs, layer_sets.shape[0], codes.shape[0], num_layers, dim)
    out = np.empty(shape, np.float32) if out is None else check_out(out, shape)

    steps = directions * np.float32(distance)  # [M, L, D]
    if backend == "numba":
        _compiled()(codes, steps, layer_sets, out)
    else:
        _manipulate_ref(codes, steps, layer_sets, out)
    return out


def _manipulate_ref(
    codes: np.ndarray, steps: np.ndarray, layer_sets: np.ndarray, out: np.ndarray
) -> None:
    """NumPy reference: one broadcast add of the masked steps to every code."""
    moved = layer_sets[None, :, :, None]  # [1, K, L, 1]
    delta = np.where(moved, steps[:, None], np.float32(0))  # [M, K, L, D]
    np.add(codes[None, None], delta[:, :, None], out=out)  # [M, K, N, L, D]


@functools.cache
def _compiled() -> Callable[..., None]:
    """The numba kernel, compiled (or loaded from numba's cache) on first use."""
    numba = numba_module()

    @numba.njit(parallel=True, cache=True)
    def manipulate_numba(codes, steps, layer_sets, out):
        num_dirs, num_sets, num_codes, num_layers, dim = out.shape
        shared = codes.shape[1] == 1  # [N, 1, D]: the same code on every layer
        for flat in numba.prange(num_dirs * num_sets * num_codes):
            m = flat // (num_sets * num_codes)
            k = flat // num_codes % num_sets
            n = flat % num_codes
            for layer in range(num_layers):
                src = 0 if shared else layer
                if layer_sets[k, layer]:
                    for d in range(dim):
                        out[m, k, n, layer, d] = codes[n, src, d] + steps[m, layer, d]
                else:
                    for d in range(dim):
                        out[m, k, n, layer, d] = codes[n, src, d]

    return manipulate_numba
