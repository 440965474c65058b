"""Pillow's uint8 bilinear resize, bit-exact, as two float32 matmuls on the device.

HiGAN's predictors see images the way torchvision's ``Resize`` leaves them: quantized to uint8 and
resampled by Pillow (``Image.resize(size, Image.BILINEAR)``). Pillow does not interpolate between
the two nearest pixels; it convolves with a triangle filter whose support grows with the
downscale factor (antialiasing), in 22-bit fixed point, one axis at a time, rounding to uint8
after each pass (Pillow ``src/libImaging/Resample.c``). A float resize differs from it by up to a
few grey levels; `PilBilinearResize` reproduces it exactly, batched, on any backend.

Pass order. Pillow before 13 (the one HiGAN ran with) always resamples horizontally first. Pillow 13
(python-pillow/Pillow#9549) resamples vertically first when the height shrinks by more than twice
as many pixels as the width does; the rounding between passes makes the two orders differ by one
grey level here and there. A square image resized to a square size (every generator output fed to
a predictor) never meets that condition, so both orders agree there; `legacy_pass_order=True`
selects the old order for the other cases.

How the integer arithmetic stays exact in float32. Each output pixel of a pass is
``(2**21 + sum_i v_i * k_i) >> 22`` with pixels ``v_i`` in [0, 255] and fixed-point weights
``k_i <= 2**22``, so the sum reaches 2**30, beyond float32's exact integers (2**24). The weights
are split into three 8-bit limbs, ``k = k2 * 2**16 + k1 * 2**8 + k0``; one matmul gives the three
limb sums, each an exact integer below 2**24 whatever the summation order, and the carries are
propagated with exact float operations (division by powers of two, floor). Every operand (pixels
and limbs) has at most 8 significant bits, so the result stays exact even where a backend feeds
float32 matmuls through TF32 or bfloat16 inputs with float32 accumulation; it is *not* exact with
float16 accumulation or float16 outputs (keep this op in float32 in TensorRT).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

from .errors import ShapeMismatchError

PRECISION_BITS = 22  # Pillow: 32 - 8 bits for the result - 2 bits of headroom
_LIMB_BITS = 8
_NUM_LIMBS = 3  # 3 * 8 bits cover k <= 2**22
_EXACT_FLOAT32 = 2**24


@functools.lru_cache(maxsize=64)
def pil_bilinear_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's fixed-point bilinear weights for one axis: int64 [out_size, in_size].

    Row ``j`` holds the integer weights ``k`` Pillow applies to input pixels for output pixel
    ``j`` (zero outside its taps), computed with Pillow's double-precision steps in Pillow's order
    (``precompute_coeffs`` and ``normalize_coeffs_8bpc``) so that every weight is the same integer.
    """
    if in_size < 1 or out_size < 1:
        raise ShapeMismatchError(
            f"cannot resize between sizes {in_size} and {out_size}; both must be at least 1"
        )
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 1.0 * filter_scale  # the bilinear (triangle) filter has support 1
    inverse_scale = 1.0 / filter_scale  # Pillow multiplies by 1/scale; dividing may round apart
    weights = np.zeros((out_size, in_size), dtype=np.int64)
    for j in range(out_size):
        center = (j + 0.5) * scale
        first = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as C does
        stop = min(int(center + support + 0.5), in_size)
        taps = [max(0.0, 1.0 - abs((i - center + 0.5) * inverse_scale)) for i in range(first, stop)]
        total = 0.0
        for tap in taps:  # sequential sum, as Pillow accumulates
            total += tap
        for offset, tap in enumerate(taps):
            normalized = tap / total if total != 0.0 else tap
            weights[j, first + offset] = int(0.5 + normalized * (1 << PRECISION_BITS))
    return weights


def _limb_matrix(in_size: int, out_size: int) -> np.ndarray:
    """The weights split into limbs, most significant first: float32 [NUM_LIMBS * out, in]."""
    weights = pil_bilinear_coefficients(in_size, out_size)  # [out, in] int64
    mask = (1 << _LIMB_BITS) - 1
    limbs = [
        (weights >> (_LIMB_BITS * index)) & mask for index in reversed(range(_NUM_LIMBS))
    ]  # each [out, in]
    # A limb sum plus the carry from the limb below (at most 1/256 of it) must stay exact.
    largest_limb_sum = 255 * max(int(limb.sum(axis=1).max()) for limb in limbs)
    if 2 * largest_limb_sum >= _EXACT_FLOAT32:
        raise ShapeMismatchError(
            f"resizing {in_size} -> {out_size} pixels shrinks more than the exact float32 "
            f"resize allows (about 60-fold); resize the images closer to {out_size} first"
        )
    return np.concatenate(limbs, axis=0).astype(np.float32)  # [NUM_LIMBS * out, in]


def _round_limb_sums(sums: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Exact ``clip((2**21 + sum v*k) >> 22, 0, 255)`` from limb sums, most significant first."""
    radix = float(1 << _LIMB_BITS)
    carried = sums[_NUM_LIMBS - 1]
    for index in reversed(range(_NUM_LIMBS - 1)):
        carried = sums[index] + torch.floor(carried / radix)
    # `carried` now counts units of 2**(8 * (NUM_LIMBS - 1)) = 2**16; dropping the remainders is
    # exact because floor((X * 2**a + r) / 2**b) == floor(X / 2**(b - a)) for integer X, r < 2**a.
    shift = PRECISION_BITS - _LIMB_BITS * (_NUM_LIMBS - 1)  # 6
    rounded = torch.floor((carried + float(1 << (shift - 1))) / float(1 << shift))
    return rounded.clamp(0.0, 255.0)


class PilBilinearResize(nn.Module):
    """Resize like ``PIL.Image.resize(size, Image.BILINEAR)`` on uint8 pixels, batched.

    Input: images [B, C, H, W] float32 holding integer values in [0, 255] (quantized pixels).
    Output: [B, C, height, width] float32, integer values, equal to Pillow's result pixel by
    pixel. A pass whose size already matches is skipped, as Pillow does; the passes run in Pillow
    13's order unless `legacy_pass_order` asks for Pillow < 13's (see the module docstring). The
    coefficient matrices for each input size are built once per device and cached; run one eager
    call at the export resolution before exporting, so that they are graph constants rather than
    tensors created during the trace. On CUDA keep matmuls in float32 (TF32 and bfloat16-input
    modes stay exact; float16 does not).
    """

    def __init__(self, size: tuple[int, int], *, legacy_pass_order: bool = False) -> None:
        super().__init__()
        height, width = size
        if height < 1 or width < 1:
            raise ShapeMismatchError(f"resize target {size} must be positive (height, width)")
        self.size = (int(height), int(width))
        self.legacy_pass_order = legacy_pass_order
        self._matrices: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def _matrix(self, in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
        key = (in_size, out_size, device)
        if key not in self._matrices:
            self._matrices[key] = torch.from_numpy(_limb_matrix(in_size, out_size)).to(device)
        return self._matrices[key]  # [NUM_LIMBS * out, in]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] float32 integer-valued in [0, 255] -> [B, C, height, width]."""
        if images.ndim != 4:
            raise ShapeMismatchError(
                f"expected images [B, C, H, W], got shape {tuple(images.shape)}"
            )
        out_height, out_width = self.size
        # int(): under legacy ONNX tracing sizes are 0-d tensors, which would put float32
        # arithmetic into the coefficients; they are constants of the exported graph anyway.
        in_height, in_width = int(images.shape[-2]), int(images.shape[-1])
        vertical_first = (
            not self.legacy_pass_order
            and out_height < in_height
            and in_height - out_height > 2 * (in_width - out_width)
        )
        if vertical_first:
            return self._horizontal(self._vertical(images))
        return self._vertical(self._horizontal(images))

    def _horizontal(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, H, width]; skipped when W already matches."""
        in_width, out_width = int(images.shape[-1]), self.size[1]
        if in_width == out_width:
            return images
        matrix = self._matrix(in_width, out_width, images.device)  # [3 * w, W]
        sums = torch.matmul(images, matrix.t())  # [B, C, H, 3 * w]
        return _round_limb_sums(sums.split(out_width, dim=-1))  # 3 x [B, C, H, w] -> [B, C, H, w]

    def _vertical(self, images: torch.Tensor) -> torch.Tensor:
        """[B, C, H, W] -> [B, C, height, W]; skipped when H already matches."""
        in_height, out_height = int(images.shape[-2]), self.size[0]
        if in_height == out_height:
            return images
        matrix = self._matrix(in_height, out_height, images.device)  # [3 * h, H]
        sums = torch.matmul(matrix, images)  # [B, C, 3 * h, W]
        return _round_limb_sums(sums.split(out_height, dim=-2))  # 3 x [B, C, h, W] -> [B, C, h, W]

    def extra_repr(self) -> str:
        return f"size={self.size}, legacy_pass_order={self.legacy_pass_order}"
