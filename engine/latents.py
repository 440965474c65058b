"""Deterministic latent source: latent i of a run with seed s is a pure function of (s, stream, i).

Counter-based generation (Philox-4x64 keyed by (seed, stream), counter = position): any chunk of
indices can be computed by any worker, in any order, with any batch size, and gives the same values.
Standard normals come from raw 64-bit words through Box-Muller, so each latent consumes a fixed
number of counter steps (no rejection sampling, whose consumption would depend on the values).
"""

from __future__ import annotations

from enum import IntEnum

import numpy as np

_WORDS_PER_STEP = 4  # Philox-4x64 yields four uint64 words per counter increment


class Stream(IntEnum):
    """Independent latent streams of one seed: samples for fitting, fresh latents for rescoring."""

    SAMPLE = 0
    RESCORE = 1


def _steps_per_latent(dim: int) -> int:
    pairs = (dim + 1) // 2  # Box-Muller turns two words into two normals
    return -(-(2 * pairs) // _WORDS_PER_STEP)


def latent_block(seed: int, stream: Stream, start: int, stop: int, dim: int) -> np.ndarray:
    """Latents [start, stop) of (seed, stream): float32 [stop - start, dim] ~ N(0, I)."""
    if not 0 <= start <= stop:
        raise ValueError(f"latent range [{start}, {stop}) is invalid")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    count = stop - start
    steps = _steps_per_latent(dim)
    bit_generator = np.random.Philox(key=[seed, int(stream)], counter=start * steps)
    words = bit_generator.random_raw(count * steps * _WORDS_PER_STEP)  # [count * steps * 4] uint64
    words = words.reshape(count, steps * _WORDS_PER_STEP)[:, : 2 * ((dim + 1) // 2)]
    uniform = (words >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))  # [0, 1)
    u1 = 1.0 - uniform[:, 0::2]  # (0, 1]: log is finite
    u2 = uniform[:, 1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    normals = np.empty((count, 2 * u1.shape[1]), dtype=np.float64)
    normals[:, 0::2] = radius * np.cos(angle)
    normals[:, 1::2] = radius * np.sin(angle)
    return normals[:, :dim].astype(np.float32)
