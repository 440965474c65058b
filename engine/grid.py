"""`rescore grid`: pictures of a manipulation, the only place the engine brings images to the host.

Rows are fresh latents, columns are distances from -distance to +distance along the boundary on
the chosen layers (the middle column is the original when `steps` is odd). A Z boundary moves z
and maps it again, so it moves all layers at once; HiGAN's pickled-dict files recommend layers
(`manipulate_layers`), which the CLI uses when no --layers is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rescore.export.session import ScoringSession

from .atomic import atomic_path
from .boundary import Boundary, boundary_stem
from .errors import BoundaryError
from .latents import Stream, latent_block
from .scoring import map_latents
from .zspace import moved_z_codes


def parse_layers(text: str, num_layers: int) -> np.ndarray:
    """'all', '3', '0-4' or '0,2,5-7' -> bool [L] mask of the layers to move."""
    mask = np.zeros(num_layers, bool)
    if text.strip() == "all":
        mask[:] = True
        return mask
    for part in text.replace(" ", "").split(","):
        low, _, high = part.partition("-")
        if not low.isdigit() or not (high or low).isdigit():
            raise BoundaryError(f"cannot read layers '{text}'; write all, 3, 0-4 or 0,2,5-7")
        first, last = int(low), int(high or low)
        if first > last or last >= num_layers:
            raise BoundaryError(f"layers '{part}' are outside 0..{num_layers - 1} or reversed")
        mask[first : last + 1] = True
    return mask


def manipulation_grid(
    session: ScoringSession,
    boundary: Boundary,
    layers: np.ndarray,
    *,
    num_latents: int = 4,
    steps: int = 5,
    distance: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """uint8 image [rows * H, steps * W, 3] of `num_latents` latents moved along `boundary`."""
    geometry = session.geometry
    z = latent_block(seed, Stream.RESCORE, 0, num_latents, geometry.z_dim)
    wp = geometry.truncate(map_latents(session, z, num_latents))  # [n, L, D]
    step = boundary.directions(geometry) * layers[:, None]  # [L, D]
    offsets = np.linspace(-distance, distance, steps, dtype=np.float32)  # [T]
    if boundary.layer_wise:
        codes = wp[:, None] + offsets[None, :, None, None] * step[None, None]  # [n, T, L, D]
    elif not layers.all():
        raise BoundaryError(
            f"boundary '{boundary.name}' is a Z-space boundary: it moves all layers at once; "
            f"use --layers all (or a W / W+ boundary for layer-wise pictures)"
        )
    else:
        codes = np.stack(
            [moved_z_codes(session, z, boundary.normal, float(t), num_latents) for t in offsets],
            axis=1,
        )  # [n, T, L, D]
    images = session.render(codes.reshape(-1, geometry.num_layers, geometry.w_dim))  # [n*T,H,W,3]
    height, width = images.shape[1:3]
    grid = images.reshape(num_latents, steps, height, width, 3).transpose(0, 2, 1, 3, 4)
    return grid.reshape(num_latents * height, steps * width, 3)


def save_grid(image: np.ndarray, directory: Path, boundary: Boundary, layers_text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{boundary_stem(boundary.name)}_layers-{boundary_stem(layers_text)}.png"
    with atomic_path(path) as staged:
        Image.fromarray(image).save(staged)
    return path
