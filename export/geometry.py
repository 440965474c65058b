"""The latent geometry of a generator as host arrays: what boundaries and the engine need to know
about a model's latent spaces, without torch (other applications read boundaries with it).

    z  [N, Z]     latent drawn from N(0, I)
    w  [N, D]     mapping output, before truncation
    wp [N, L, D]  wp[:, l] = w_avg + (w - w_avg) * truncation[l]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, eq=False)
class LatentGeometry:
    """Shapes of the latent spaces and the truncation that links w to wp."""

    z_dim: int
    w_dim: int
    num_layers: int
    w_avg: np.ndarray = field(repr=False)  # [D] float32
    truncation: np.ndarray = field(repr=False)  # [L] float32, psi_l (1.0 = untouched)
    family: str | None = None  # generator family ("stylegan", ...); None when unknown
    layer_wise: bool = True  # False: no layer-wise code (PGGAN): only the all-layers row exists

    def truncate(self, w: np.ndarray) -> np.ndarray:
        """w [N, D] -> wp [N, L, D]: wp[:, l] = w_avg + (w - w_avg) * psi_l."""
        w_avg = self.w_avg[None, None, :]
        return (w_avg + (w[:, None, :] - w_avg) * self.truncation[None, :, None]).astype(np.float32)
