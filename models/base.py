"""The two protocols every generator and predictor in rescore follows.

A generator takes layer-wise codes (W+) and paints images; a predictor turns images into one score
per named semantic. Both are plain `torch.nn.Module`s; the engine only relies on what is below.

Geometry conventions (used everywhere in rescore):
    z      [B, Z]     latent drawn from N(0, I)
    w      [B, D]     mapping-network output, *before* truncation
    wp     [B, L, D]  layer-wise codes fed to synthesis, *after* truncation (HiGAN's "wp")
    images [B, 3, H, W] float32, RGB, nominal range [-1, 1] (not clipped)
    scores [B, S]     float32, one column per semantic name
Truncation is linear: wp[:, l] = w_avg + (w - w_avg) * coefficients[l].
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class Generator(Protocol):
    """A style-based generator: z -> w -> wp (truncation) -> image."""

    z_dim: int
    w_dim: int
    num_layers: int
    resolution: int

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z [B, Z] -> w [B, D] (no truncation)."""
        ...

    def truncation_coefficients(self) -> torch.Tensor:
        """Per-layer truncation coefficient psi_l, shape [L] (1.0 where not truncated)."""
        ...

    def average_w(self) -> torch.Tensor:
        """The w_avg used for truncation, shape [D]."""
        ...

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """Synthesis network: wp [B, L, D] -> images [B, 3, H, W] in [-1, 1]."""
        ...


@runtime_checkable
class Predictor(Protocol):
    """Scores images; preprocessing happens inside, on the tensor, on the device."""

    semantic_names: tuple[str, ...]

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] float32 in [-1, 1] -> scores [B, S] float32."""
        ...


def truncate(w: torch.Tensor, w_avg: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
    """Broadcast w [B, D] to layer-wise codes and apply truncation: -> wp [B, L, D]."""
    w_avg = w_avg.view(1, 1, -1)
    return w_avg + (w.unsqueeze(1) - w_avg) * coefficients.view(1, -1, 1)
