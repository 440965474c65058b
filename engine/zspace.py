"""Moving along a Z-space boundary: move z, map it again, truncate again.

A Z boundary has no fixed displacement in W+ (the mapping network is non-linear), so its
manipulated codes are computed per latent, as HiGAN and InterFaceGAN do:
    wp' = truncate(mapping(z + distance * n))
It moves every layer at once: Z boundaries have only the all-layers row.
"""

from __future__ import annotations

import numpy as np

from rescore.export.session import ScoringSession

from .scoring import map_latents


def moved_z_codes(
    session: ScoringSession, z: np.ndarray, normal: np.ndarray, distance: float, batch_size: int
) -> np.ndarray:
    """z [n, Z] moved by `distance` along the unit normal [1, Z] -> wp [n, L, D] float32."""
    moved = (z + np.float32(distance) * normal.reshape(1, -1)).astype(np.float32)  # [n, Z]
    return session.geometry.truncate(map_latents(session, moved, batch_size))  # [n, L, D]
