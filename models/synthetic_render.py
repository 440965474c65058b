"""The synthetic scene: its factors, its fixed layout constants and its differentiable renderer.

A scene is a room seen from the front: a wall over a floor split by a (tilted) horizon line, light
and dark specks on both ("clutter"), a dark picture on the wall that fades in ("object_presence")
and a white box standing on the floor. Everything is drawn with soft edges (sigmoids of signed
distances), so small factor changes give small pixel changes, and batched with no per-sample loop.

The constants below are the *conventions* shared by the renderer and the pixel-only predictor
(`SyntheticScenePredictor`): brightness levels, the regions that always hold plain wall, where the
picture hangs. They are chosen so that each measurement sees one factor only:
    - wall and floor share hue and saturation (>= 0.4) and differ in brightness only, so any blend
      of them keeps that hue and saturation; the box and the picture are grey;
    - lighting multiplies every pixel; specks multiply the background by 1 + amplitude * pattern
      with a pattern of zero mean per row of the top band, so band means see lighting alone and
      band hue/saturation see the palette alone (both are invariant to a common factor);
    - the horizon never rises into the rows above `WALL_ROWS_END`, the picture hangs above them,
      the box never reaches the top band, and the picture's region carries no specks.
Positions are fractions of the image side (x to the right, y downwards, pixel centres at
(i + 0.5) / resolution).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Brightness (HSV value, before lighting) of each surface.
WALL_VALUE = 0.78
FLOOR_VALUE = 0.40
BOX_VALUE = 0.96
PICTURE_VALUE = 0.06
CLUTTER_MAX = 0.2  # largest relative brightness change of a speck

# Regions (fractions of the image side).
TOP_BAND_END = 0.125  # rows above: plain wall with specks, nothing else
WALL_ROWS_END = 0.37  # rows above: wall or picture, never floor or box
PICTURE_BOX = (0.62, 0.17, 0.86, 0.32)  # x0, y0, x1, y1 of the picture
PICTURE_REGION = (0.59, 0.14, 0.89, 0.35)  # picture plus a margin; plain wall, no specks
BOX_BASE = 0.94  # y of the box's bottom edge
BOX_ASPECT = 0.75  # box width / box height
BOX_CORNER = 0.25  # corner radius / half width

SPECK_DENSITY_THRESHOLD = 1.2  # |N(0,1)| above this marks a speck (~23% of pixels)


@dataclass(frozen=True)
class SceneFactor:
    """One factor of variation: its name, the layer group that drives it, its range of values."""

    name: str
    group: str
    low: float
    high: float


LAYER_GROUPS = ("layout", "objects", "attributes", "colour")

FACTORS: tuple[SceneFactor, ...] = (
    SceneFactor("horizon", "layout", 0.45, 0.65),  # y of the wall/floor line at x = 0.5
    SceneFactor("tilt", "layout", -0.12, 0.12),  # slope dy/dx of that line
    SceneFactor("object_size", "objects", 0.14, 0.36),  # box height
    SceneFactor("object_x", "objects", 0.25, 0.75),  # box centre x
    SceneFactor("object_presence", "objects", 0.0, 1.0),  # picture opacity
    SceneFactor("lighting", "attributes", 0.5, 1.0),  # global brightness multiplier
    SceneFactor("clutter", "attributes", 0.0, 1.0),  # speck amplitude / CLUTTER_MAX
    SceneFactor("palette_hue", "colour", 0.03, 0.83),  # wall hue (HSV, in turns)
    SceneFactor("palette_saturation", "colour", 0.4, 0.95),  # wall and floor saturation
)
FACTOR_NAMES: tuple[str, ...] = tuple(f.name for f in FACTORS)


def pixel_centres(resolution: int, device: torch.device) -> torch.Tensor:
    """Pixel-centre coordinates along one side: [R] float32 in (0, 1)."""
    return (torch.arange(resolution, device=device, dtype=torch.float32) + 0.5) / resolution


def first_row_at(position: float, resolution: int) -> int:
    """Index of the first pixel whose centre lies at or past `position` (a fraction of the side)."""
    return max(0, min(resolution, math.ceil(position * resolution - 0.5)))


def region_slices(
    resolution: int, region: tuple[float, float, float, float]
) -> tuple[slice, slice]:
    """(rows, columns) slices of the pixels whose centres lie inside `region` (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = region
    rows = slice(first_row_at(y0, resolution), first_row_at(y1, resolution))
    cols = slice(first_row_at(x0, resolution), first_row_at(x1, resolution))
    return rows, cols


def speck_pattern(resolution: int, generator: torch.Generator) -> torch.Tensor:
    """The fixed clutter pattern [R, R] in [-1, 1]: sparse light (+) and dark (-) specks.

    Each row of the top band has zero mean (so band means measure lighting alone) and the picture
    region is blank (so the picture's darkness is measured without specks).
    """
    noise = torch.randn(resolution, resolution, generator=generator)  # [R, R]
    pattern = torch.sign(noise) * (noise.abs() > SPECK_DENSITY_THRESHOLD).float()  # [R, R]
    band_rows = first_row_at(TOP_BAND_END, resolution)
    band = pattern[:band_rows]
    pattern[:band_rows] = band - band.mean(dim=1, keepdim=True)
    pattern[region_slices(resolution, PICTURE_REGION)] = 0.0
    return pattern / pattern.abs().max().clamp_min(1e-6)


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: float) -> torch.Tensor:
    """HSV -> RGB (hexcone), hue in turns: [B] x [B] -> [B, 3].

    max(RGB) == value and min(RGB) == value * (1 - saturation) exactly, which the predictor uses.
    """
    offsets = torch.tensor([5.0, 3.0, 1.0], device=hue.device)  # R, G, B
    k = torch.remainder(offsets[None, :] + 6.0 * hue[:, None], 6.0)  # [B, 3]
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)  # [B, 3]
    return value * (1.0 - saturation[:, None] * ramp)  # [B, 3]


def _soft_inside(signed_distance: torch.Tensor, softness: float) -> torch.Tensor:
    """Coverage from a signed distance in pixels (negative inside): smooth step, 0.5 on the edge."""
    return torch.sigmoid(-signed_distance / softness)


def _rounded_box_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    centre_x: torch.Tensor,
    centre_y: torch.Tensor,
    half_w: torch.Tensor,
    half_h: torch.Tensor,
    radius: torch.Tensor,
) -> torch.Tensor:
    """Signed distance to an axis-aligned rounded box.

    x [1, 1, R], y [1, R, 1], box terms [B, 1, 1] -> [B, R, R].
    """
    qx = (x - centre_x).abs() - (half_w - radius)  # [B, R, R]
    qy = (y - centre_y).abs() - (half_h - radius)  # [B, R, R]
    outside = torch.sqrt(qx.clamp_min(0.0) ** 2 + qy.clamp_min(0.0) ** 2 + 1e-12)
    inside = torch.maximum(qx, qy).clamp_max(0.0)
    return outside + inside - radius  # [B, R, R]


SEGMENT_CLASSES = ("wall", "floor", "picture", "box")


def scene_coverage(
    factors: torch.Tensor, resolution: int, softness: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Soft coverage of the floor, the picture (times its opacity) and the box: [B, R, R] each.

    factors [B, F] in `FACTOR_NAMES` order (physical units); what `render_scene` paints with.
    """
    floor = floor_coverage(factors, resolution, softness)
    return (floor, *object_coverage(factors, resolution, softness))


def _grid(resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    c = pixel_centres(resolution, device)
    return c.view(1, 1, resolution), c.view(1, resolution, 1)  # x [1, 1, R], y [1, R, 1]


def floor_coverage(factors: torch.Tensor, resolution: int, softness: float) -> torch.Tensor:
    """Soft coverage of the floor [B, R, R] (reads the layout factors only)."""
    horizon, tilt = factors[:, :2].unbind(1)
    x, y = _grid(resolution, factors.device)
    line = horizon.view(-1, 1, 1) + tilt.view(-1, 1, 1) * (x - 0.5)  # [B, 1, R]
    return _soft_inside((line - y) * resolution, softness)  # [B, R, R]


def object_coverage(
    factors: torch.Tensor, resolution: int, softness: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft coverage of the picture (times its opacity) and the box [B, R, R] (object factors)."""
    size, box_x, presence = factors[:, 2:5].unbind(1)
    res = resolution
    x, y = _grid(res, factors.device)
    px0, py0, px1, py1 = PICTURE_BOX
    picture_dist = torch.maximum(
        (x - (px0 + px1) / 2).abs() - (px1 - px0) / 2,
        (y - (py0 + py1) / 2).abs() - (py1 - py0) / 2,
    )  # [1, R, R]
    picture = presence.view(-1, 1, 1) * _soft_inside(picture_dist * res, softness)  # [B, R, R]
    half_h = (size / 2).view(-1, 1, 1)
    half_w = BOX_ASPECT * half_h
    box_dist = _rounded_box_distance(
        x, y, box_x.view(-1, 1, 1), BOX_BASE - half_h, half_w, half_h, BOX_CORNER * half_w
    )  # [B, R, R]
    return picture, _soft_inside(box_dist * res, softness)


def scene_segmentation(factors: torch.Tensor, resolution: int, softness: float) -> torch.Tensor:
    """The true segmentation: labels [B, R, R] int64 indexing `SEGMENT_CLASSES`.

    A pixel is box where the box covers more than half of it, else picture where the picture's
    coverage times opacity exceeds one half, else floor or wall by the floor's coverage.
    """
    floor, picture, box = scene_coverage(factors, resolution, softness)
    labels = (floor > 0.5).long()  # wall 0, floor 1
    labels = torch.where(picture > 0.5, torch.full_like(labels, 2), labels)
    return torch.where(box > 0.5, torch.full_like(labels, 3), labels)


def render_scene(factors: torch.Tensor, pattern: torch.Tensor, softness: float) -> torch.Tensor:
    """Paint scenes from factor values (columns in `FACTOR_NAMES` order, physical units).

    factors [B, F], pattern [R, R] (see `speck_pattern`), softness: edge width in pixels.
    Returns images [B, 3, R, R] float32 in [-1, 1].

    Wall and floor share one chroma and the box and picture are grey, so the image is
    chroma [B, 3] x coloured brightness [B, R, R] + grey brightness [B, R, R]: every layer below is
    painted on one channel and the three channels are formed once at the end. The painting runs
    in `PAINTERS` steps, one per factor group in `LAYER_GROUPS` order, each reading its group's
    factors only (so a generator can reuse the steps before a moved group).
    """
    painted: tuple[torch.Tensor, ...] = ()
    for paint in PAINTERS:
        painted = paint(factors, painted, pattern, softness)
    return painted[0]


Painted = tuple[torch.Tensor, ...]


def paint_layout(factors: torch.Tensor, _: Painted, pattern: torch.Tensor, softness: float):
    """1. Wall over floor, split by the tilted horizon line: brightness [B, R, R]."""
    floor = floor_coverage(factors, pattern.shape[-1], softness)  # [B, R, R]
    return (WALL_VALUE + (FLOOR_VALUE - WALL_VALUE) * floor,)


def paint_objects(factors: torch.Tensor, painted: Painted, pattern: torch.Tensor, softness: float):
    """2. The picture and the box: their coverages [B, R, R], beside the layout's brightness."""
    return (*painted, *object_coverage(factors, pattern.shape[-1], softness))


def paint_attributes(
    factors: torch.Tensor, painted: Painted, pattern: torch.Tensor, softness: float
):
    """3. Specks multiply the background brightness (never its hue or saturation), the picture
    (dark grey, opacity `object_presence`) and the white box cover it, lighting scales all:
    -> (grey offset [B, 1, R, R], coloured brightness [B, 1, R, R]), both in [-1, 1] terms."""
    base, picture, box = painted
    lighting, clutter = factors[:, 5], factors[:, 6]
    speck_gain = torch.addcmul(
        torch.ones_like(pattern), (CLUTTER_MAX * clutter).view(-1, 1, 1), pattern
    )  # [B, R, R]
    coloured = base * speck_gain  # [B, R, R]
    coloured = coloured * (1.0 - picture)
    grey = PICTURE_VALUE * picture  # [B, R, R]
    coloured = coloured * (1.0 - box)
    grey = grey + (BOX_VALUE - grey) * box
    scale = 2.0 * lighting.view(-1, 1, 1, 1)
    return scale * grey.unsqueeze(1) - 1.0, scale * coloured.unsqueeze(1)  # [B, 1, R, R] each


def paint_colour(factors: torch.Tensor, painted: Painted, pattern: torch.Tensor, softness: float):
    """4. Form RGB from the wall's chroma: -> (images [B, 3, R, R],)."""
    offset, coloured = painted
    chroma = hsv_to_rgb(factors[:, 7], factors[:, 8], 1.0).view(-1, 3, 1, 1)  # [B, 3, 1, 1]
    return (torch.addcmul(offset, chroma, coloured),)  # [B, 3, R, R]


PAINTERS = (paint_layout, paint_objects, paint_attributes, paint_colour)  # `LAYER_GROUPS` order
