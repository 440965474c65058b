"""A weightless colour predictor: low-level colour statistics of each image as semantics.

Cheap, exact and interpretable, it complements the Places365 predictor (HiGAN's lowest layers
control exactly this kind of property) and gives the engine a predictor with known answers.
Images in [-1, 1] map to RGB in [0, 1] (``(x + 1) / 2``, clipped), in float32, without the uint8
quantization the Places365 path uses. Every score is a mean (or spread) over the pixels of one
image, so a positive change means "more of it" and HiGAN's re-scoring statistic
``mean(max(0, s_manipulated - s_original))`` is meaningful for each column.

Semantics, in column order:
    brightness    mean Rec. 601 luma 0.299 R + 0.587 G + 0.114 B, in [0, 1]
    contrast      RMS contrast: population standard deviation of that luma, in [0, 0.5]
    saturation    mean HSV saturation (max - min) / max (0 for black pixels), in [0, 1]
    colorfulness  Hasler & Suesstrunk (2003) M = sigma_rgyb + 0.3 mu_rgyb on the 0..255 scale,
                  rg = R - G, yb = (R + G) / 2 - B, population standard deviations; the paper's
                  scale applies (about 15 "slightly", 33 "moderately", 59 "quite", 82 "highly")
    warmth        mean R - B, in [-1, 1]
    hue_red       mean chroma * cos(hue - 0 deg)   (HSV hue, chroma = max - min), in [-1, 1]
    hue_green     mean chroma * cos(hue - 120 deg)
    hue_blue      mean chroma * cos(hue - 240 deg)
A hue angle is circular, so its difference has no sign that means anything; the three hue columns
instead project each pixel's chroma vector on the red, green and blue hue directions (they sum to
zero per image; a negative hue_blue is yellow, a negative hue_red cyan). Weighting by chroma
rather than saturation keeps near-black pixels, whose hue is noise, from counting.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .errors import ShapeMismatchError

COLOR_SEMANTICS = (
    "brightness",
    "contrast",
    "saturation",
    "colorfulness",
    "warmth",
    "hue_red",
    "hue_green",
    "hue_blue",
)
_LUMA_601 = (0.299, 0.587, 0.114)
_HUE_DIRECTIONS_DEG = (0.0, 120.0, 240.0)


def _hsv_hue_radians(rgb: torch.Tensor, high: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """HSV hue in radians of rgb [B, 3, H, W] (arbitrary where chroma is 0): [B, H, W]."""
    red, green, blue = rgb.unbind(1)  # each [B, H, W]
    safe_chroma = torch.where(chroma > 0, chroma, torch.ones_like(chroma))
    sixths = torch.where(
        high == red,
        (green - blue) / safe_chroma,
        torch.where(
            high == green, (blue - red) / safe_chroma + 2.0, (red - green) / safe_chroma + 4.0
        ),
    )  # hue in units of 60 degrees
    return sixths * (math.pi / 3.0)


class ColorPredictor(nn.Module):
    """Colour statistics: images [B, 3, H, W] in [-1, 1] -> scores [B, 8] (see module docs)."""

    # Hard bounds of each column (see module docs); colorfulness: sigma + 0.3 mu of (rg, yb) on
    # the 0..255 scale, each at most 255 * sqrt(2).
    score_range = None
    score_ranges = (
        (0.0, 1.0),
        (0.0, 0.5),
        (0.0, 1.0),
        (0.0, 1.3 * 255.0 * math.sqrt(2.0)),
        (-1.0, 1.0),
        (-1.0, 1.0),
        (-1.0, 1.0),
        (-1.0, 1.0),
    )

    def __init__(self) -> None:
        super().__init__()
        self.semantic_names = COLOR_SEMANTICS

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] float in [-1, 1] -> scores [B, 8] float32."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ShapeMismatchError(
                f"expected RGB images [B, 3, H, W], got shape {tuple(images.shape)}"
            )
        rgb = ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)  # [B, 3, H, W]
        red, green, blue = rgb.unbind(1)  # each [B, H, W]
        pixels = (1, 2)

        luma = _LUMA_601[0] * red + _LUMA_601[1] * green + _LUMA_601[2] * blue  # [B, H, W]
        high = rgb.amax(dim=1)  # [B, H, W]
        chroma = high - rgb.amin(dim=1)  # [B, H, W]
        saturation = torch.where(
            high > 0, chroma / torch.where(high > 0, high, torch.ones_like(high)), 0.0
        )  # [B, H, W]

        red_green = 255.0 * (red - green)  # [B, H, W]
        yellow_blue = 255.0 * (0.5 * (red + green) - blue)  # [B, H, W]
        spread = torch.sqrt(
            red_green.var(dim=pixels, correction=0) + yellow_blue.var(dim=pixels, correction=0)
        )  # [B]
        offset = torch.sqrt(red_green.mean(dim=pixels) ** 2 + yellow_blue.mean(dim=pixels) ** 2)

        hue = _hsv_hue_radians(rgb, high, chroma)  # [B, H, W]
        hue_columns = [
            (chroma * torch.cos(hue - math.radians(direction))).mean(dim=pixels)
            for direction in _HUE_DIRECTIONS_DEG
        ]  # each [B]
        columns = [
            luma.mean(dim=pixels),
            luma.std(dim=pixels, correction=0),
            saturation.mean(dim=pixels),
            spread + 0.3 * offset,
            (red - blue).mean(dim=pixels),
            *hue_columns,
        ]
        return torch.stack(columns, dim=1)  # [B, 8]
