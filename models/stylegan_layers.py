"""Operations shared by the StyleGAN family (v1, v2 in the genforce and NVlabs layouts).

Pure-torch functions with no parameters of their own, plus two small holders whose names are
part of the published layouts (`ParameterHolder` for `fc.weight`-style keys, `TruncationBuffers`).
Each architecture file keeps the parameter names of its checkpoints and calls these for the
arithmetic. They follow the
equalized-learning-rate convention (weights stored at unit scale, multiplied by
gain / sqrt(fan_in) at run time) and the FIR resampling of `upfirdn2d` (NVlabs'
`torch_utils/ops/upfirdn2d.py`, reference path), written with ordinary convolutions so that every
backend (torch, ONNX Runtime, TensorRT) runs them and the batch axis stays dynamic.

Weights use torch's layout [out, in, kh, kw]; architectures with another stored layout
(genforce's [kh, kw, in, out]) permute before calling.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ShapeMismatchError

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
Activation = Literal["linear", "lrelu"]


class ParameterHolder(nn.Module):
    """Holds one parameter under `name`, so keys read as in the published files (`fc.weight`)."""

    def __init__(self, name: str, value: torch.Tensor) -> None:
        super().__init__()
        self.register_parameter(name, nn.Parameter(value))


class TruncationBuffers(nn.Module):
    """The truncation state: `w_avg` [D] and per-layer coefficients `truncation` [1, L, 1].

    Coefficient `psi` on layers < `layers`, 1 elsewhere (psi=1.0 or layers=0: no truncation).
    """

    def __init__(self, num_layers: int, w_dim: int, psi: float, layers: int) -> None:
        super().__init__()
        self.register_buffer("w_avg", torch.zeros(w_dim))  # [D]
        layer_index = torch.arange(num_layers, dtype=torch.float32).view(1, num_layers, 1)
        ones = torch.ones_like(layer_index)
        coefficients = torch.where(layer_index < layers, ones * psi, ones)  # [1, L, 1]
        self.register_buffer("truncation", coefficients)

    def coefficients(self) -> torch.Tensor:
        """Per-layer truncation coefficient psi_l, shape [L]."""
        return self.truncation.view(-1)


def check_latents(z: torch.Tensor, z_dim: int) -> None:
    """Refuse latents that are not [batch, z_dim] (one message for the whole family)."""
    if z.ndim != 2 or z.shape[1] != z_dim:
        raise ShapeMismatchError(
            f"latents z have shape {tuple(z.shape)}, expected [batch, {z_dim}]; "
            f"draw z with z_dim={z_dim}"
        )


def pixel_norm(x: torch.Tensor, *, eps: float = 1e-8) -> torch.Tensor:
    """Normalise each row to unit second moment: x [B, C] -> x / sqrt(mean(x^2) + eps)."""
    return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + eps)


def equalized_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    *,
    weight_gain: float,
    bias_gain: float = 1.0,
) -> torch.Tensor:
    """Dense layer with run-time weight scaling: x [B, in] @ (W [out, in] * weight_gain).T + b."""
    scaled_bias = None if bias is None else bias * bias_gain
    return F.linear(x, weight * weight_gain, scaled_bias)  # [B, out]


def equalized_conv2d(
    x: torch.Tensor, weight: torch.Tensor, *, weight_gain: float, padding: int
) -> torch.Tensor:
    """Convolution with run-time weight scaling: x [B, in, H, W], W [out, in, k, k]."""
    return F.conv2d(x, weight * weight_gain, padding=padding)  # [B, out, H', W']


def bias_act(
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    activation: Activation = "linear",
    gain: float | None = None,
    clamp: float | None = None,
) -> torch.Tensor:
    """Add a per-channel bias (dim 1), apply the activation, scale by `gain`, clamp to +-clamp.

    `gain` defaults to the activation's own gain (sqrt 2 for leaky ReLU, 1 for linear), as in
    NVlabs' `bias_act`. x [B, C, ...] -> same shape.
    """
    if bias is not None:
        x = x + bias.view(1, -1, *([1] * (x.ndim - 2)))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE)
        gain = LRELU_GAIN if gain is None else gain
    if gain is not None and gain != 1.0:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


def fir_filter(
    x: torch.Tensor, kernel: torch.Tensor, *, padding: int | tuple[int, int, int, int]
) -> torch.Tensor:
    """Depthwise FIR filter (cross-correlation) with zero padding (left, right, top, bottom).

    `kernel` is [kh, kw] (the same for every channel) or [C, 1, kh, kw]; it already holds any
    gain. x [B, C, H, W] -> [B, C, H + top + bottom - kh + 1, W + left + right - kw + 1].
    """
    channels = x.shape[1]
    if kernel.ndim == 2:
        kernel = kernel.expand(channels, 1, *kernel.shape)  # [C, 1, kh, kw]
    if isinstance(padding, int):
        return F.conv2d(x, kernel, padding=padding, groups=channels)
    return F.conv2d(F.pad(x, padding), kernel, groups=channels)


def upsample_zeros(x: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """Insert factor-1 zeros after every pixel: x [B, C, H, W] -> [B, C, factor*H, factor*W]."""
    batch, channels, height, width = x.shape
    x = x.reshape(batch, channels, height, 1, width, 1)
    x = F.pad(x, (0, factor - 1, 0, 0, 0, factor - 1))  # [B, C, H, f, W, f]
    return x.reshape(batch, channels, height * factor, width * factor)


def upsample2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """x2 upsampling with a 4x4 FIR `kernel` that includes the gain of 4 (StyleGAN2's RGB skip).

    Zero insertion, then the filter with padding (2, 1) per axis, as upfirdn2d's upsample2d.
    x [B, C, H, W] -> [B, C, 2H, 2W].
    """
    return fir_filter(upsample_zeros(x), kernel, padding=(2, 1, 2, 1))


def conv_transpose_up2(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """x2 upsampling convolution: transposed conv, stride 2, then a 4x4 FIR filter.

    `weight` [out, in, k, k] is used as a transposed-conv kernel after a spatial flip (so that it
    acts as a convolution on the zero-upsampled input, as StyleGAN2's `Conv0_up`); `kernel` [4, 4]
    includes the gain of 4; the filter pads (5 - k) / 2 per side (1 for a 3x3 conv, 2 for 1x1).
    x [B, in, H, W] -> [B, out, 2H, 2W].
    """
    x = F.conv_transpose2d(x, weight.transpose(0, 1).flip(2, 3), stride=2)  # [B, out, 2H+k-2, .]
    padding = (kernel.shape[-1] + 1 - weight.shape[-1]) // 2
    return fir_filter(x, kernel, padding=padding)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool,
    up_kernel: torch.Tensor | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution, written by scaling activations (not grouped weights).

    y = conv(x * s, W) * d with d = 1 / sqrt(sum_{in,kh,kw} (W * s)^2 + eps) when `demodulate`;
    equal to convolving each sample with its own modulated, demodulated weights, but the
    convolution weight stays shared, so the graph has no per-batch groups. With `up_kernel`
    [4, 4] (gain included) the convolution upsamples x2 (`conv_transpose_up2`).
    x [B, in, H, W], W [out, in, k, k] (already scaled), s [B, in] -> [B, out, H', W'].
    """
    batch, in_channels = styles.shape
    x = x * styles.view(batch, in_channels, 1, 1)
    kernel_size = weight.shape[-1]
    if up_kernel is None:
        x = F.conv2d(x, weight, padding=kernel_size // 2)
    else:
        x = conv_transpose_up2(x, weight, up_kernel)
    if demodulate:
        # [B, out]: sum over in and the kernel window of (W * s)^2
        power = torch.einsum("oi,bi->bo", weight.square().sum(dim=(2, 3)), styles.square())
        x = x * torch.rsqrt(power + eps).view(batch, -1, 1, 1)
    return x


def add_noise(x: torch.Tensor, noise: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """Add a stored noise map `noise` [1, 1, H, W] (or [H, W]) scaled by `strength` (scalar)."""
    return x + noise.view(1, 1, *noise.shape[-2:]) * strength
