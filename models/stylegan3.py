"""StyleGAN3 (alias-free) generator, configs T and R, in the layout of NVlabs `stylegan3` pickles.

    z [B, Z] (+ class) -> mapping -> w [B, D] -> truncation -> ws [B, L, D] -> synthesis -> images

Synthesis (L = num_layers + 2 codes): ws[:, 0] drives the Fourier-feature input (a learned
rotation/translation of fixed random frequencies), ws[:, 1..num_layers] the synthesis layers and
ws[:, L-1] the ToRGB layer. Every layer is a modulated convolution followed by the *filtered* leaky
ReLU: bias, upsample by the layer's up filter, leaky ReLU (gain sqrt 2, clamp), downsample by its
down filter. Config T uses 3x3 convolutions and separable Kaiser filters; config R uses 1x1
convolutions and radially symmetric (jinc) down filters on the non-critical layers.

Numerics follow NVlabs' `training/networks_stylegan3.py` with its `impl='ref'` ops
(`filtered_lrelu`, `upfirdn2d`, `bias_act`), written here in plain PyTorch so the graph exports to
ONNX. Two deliberate, numerically negligible differences, both for a batch-independent and
exportable graph: the modulated convolution scales the input and the output instead of building
per-sample weights for a grouped convolution (the same linear map), and the style pre-normalization
is per sample (NVlabs normalizes over the whole batch; demodulation cancels that scale up to its
1e-8 epsilon). The separable upsampling runs polyphase (`upsample_separable`, bound by a test to
the zero-insertion reference `upfirdn2d`); the filtered leaky ReLU filters channel counts padded
with zeros to a multiple of 16 (see `_CHANNEL_BLOCK`; bound by a test to the reference ops).
Parameter names are NVlabs' `Generator.state_dict()`
keys, so a pickle's state dict loads with strict=True. The network always runs in float32
(NVlabs' fp16 layers are a CUDA speed-up; `num_fp16_res` is accepted and ignored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .base import truncate
from .checkpoints import load_strict
from .errors import CheckpointError, RescoreError, ShapeMismatchError
from .stages import Stage, State, run_stages

if TYPE_CHECKING:  # the registry imports this module lazily; no import cycle at run time
    from .registry import GeneratorOptions

_LRELU_SLOPE = 0.2
_LRELU_GAIN = math.sqrt(2.0)
_NORM_EPS = 1e-8
_WHAT = "StyleGAN3 generator"
# Init kwargs NVlabs records that only matter for training or for CUDA fp16 layers.
_IGNORED_KWARGS = ("num_fp16_res", "magnitude_ema_beta")
_MAPPING_KWARGS = {"num_layers": "mapping_layers", "lr_multiplier": "mapping_lr_multiplier"}
_IGNORED_MAPPING_KWARGS = ("w_avg_beta",)
# The filtered leaky ReLU filters channel counts padded with zeros to a multiple of this: ONNX
# Runtime's CPU depthwise convolutions take their fast (NCHWc) path only for a multiple of its
# block (8 with AVX2, 16 with AVX-512); config R's 12x12 filter on 362 channels ran 3x slower
# than on 368 (bench/RESULTS.md, StyleGAN3 config R). Torch's speed does not depend on it.
_CHANNEL_BLOCK = 16


@dataclass(frozen=True)
class StyleGAN3Config:
    """Hyper-parameters of a StyleGAN3 generator; names and defaults are NVlabs' init kwargs.

    `num_layers` counts synthesis layers without the input and ToRGB (NVlabs' meaning); the
    generator's `num_layers` (number of codes) is `num_layers + 2`. Config T is the default;
    `preset("r")` gives config R's changes (1x1 convs, radial filters, doubled channels).
    """

    z_dim: int
    c_dim: int
    w_dim: int
    img_resolution: int
    img_channels: int = 3
    mapping_layers: int = 2
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    num_layers: int = 14
    num_critical: int = 2
    first_cutoff: float = 2.0
    first_stopband: float = 2**2.1
    last_stopband_rel: float = 2**0.3
    margin_size: int = 10
    output_scale: float = 0.25
    conv_kernel: int = 3
    filter_size: int = 6
    lrelu_upsampling: int = 2
    use_radial_filters: bool = False
    conv_clamp: float | None = 256.0

    @property
    def num_ws(self) -> int:
        return self.num_layers + 2

    def preset(self, name: str) -> StyleGAN3Config:
        """This config changed as NVlabs' train.py changes it for `--cfg stylegan3-{name}`."""
        if name == "t":
            return self
        if name == "r":
            return replace(
                self,
                conv_kernel=1,
                use_radial_filters=True,
                channel_base=self.channel_base * 2,
                channel_max=self.channel_max * 2,
            )
        raise ValueError(f"StyleGAN3 config '{name}' is not known; use one of ['t', 'r']")


def config_from_init_kwargs(init_kwargs: dict[str, Any]) -> StyleGAN3Config:
    """The config of a pickled `networks_stylegan3.Generator` from its recorded init kwargs.

    Accepts synthesis and layer kwargs flattened into the Generator's kwargs (as NVlabs records
    them) or nested under `synthesis_kwargs`. Unknown names raise `CheckpointError`.
    """
    kwargs = {
        k: v for k, v in init_kwargs.items() if k not in ("synthesis_kwargs", "mapping_kwargs")
    }
    kwargs.update(init_kwargs.get("synthesis_kwargs") or {})
    known = {f.name for f in fields(StyleGAN3Config)} - set(_MAPPING_KWARGS.values())
    unknown = sorted(k for k in kwargs if k not in known and k not in _IGNORED_KWARGS)
    for key, value in (init_kwargs.get("mapping_kwargs") or {}).items():
        if key in _MAPPING_KWARGS:
            kwargs[_MAPPING_KWARGS[key]] = value
        elif key not in _IGNORED_MAPPING_KWARGS:
            unknown.append(f"mapping_kwargs.{key}")
    required = ("z_dim", "c_dim", "w_dim", "img_resolution")
    missing = [k for k in required if k not in kwargs]
    if unknown or missing:
        raise CheckpointError(
            f"{_WHAT} init kwargs do not fit networks_stylegan3.Generator (unknown: "
            f"{unknown or 'none'}; missing: {missing or 'none'}); "
            f"pass an unmodified stylegan3 pickle"
        )
    config = StyleGAN3Config(**{k: v for k, v in kwargs.items() if k not in _IGNORED_KWARGS})
    if config.img_channels != 3:
        raise CheckpointError(
            f"{_WHAT} paints {config.img_channels}-channel images; rescore's predictors need RGB "
            f"(img_channels=3); use an RGB model"
        )
    if config.num_layers <= config.num_critical:
        raise CheckpointError(
            f"{_WHAT} has num_layers={config.num_layers} <= num_critical={config.num_critical}; "
            f"pass an unmodified stylegan3 pickle"
        )
    return config


def nvlabs_init_kwargs(config: StyleGAN3Config) -> dict[str, Any]:
    """The init kwargs NVlabs records for a Generator of `config` (inverse of the reader above).

    For tests that write stylegan3 pickles: every setting explicit, synthesis and layer kwargs
    flattened, mapping settings under `mapping_kwargs`.
    """
    kwargs = {f.name: getattr(config, f.name) for f in fields(config)}
    mapping = {nvlabs: kwargs.pop(ours) for nvlabs, ours in _MAPPING_KWARGS.items()}
    return {**kwargs, "mapping_kwargs": mapping}


# ------------------------------------------------------------------------------------------------
# Reference ops (NVlabs impl='ref'), written export-friendly


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    *,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample (zero insertion), pad or crop, FIR filter, downsample: NVlabs' `_upfirdn2d_ref`.

    x [B, C, H, W]; f [K] (separable), [K, K] or None (identity); padding (x0, x1, y0, y1) on the
    upsampled image, negative values crop. The convolution is strided instead of computing and
    dropping the samples the downsampling discards (the same values).
    """
    batch, channels, height, width = x.shape
    if up > 1:
        x = x.reshape(batch, channels, height, 1, width, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(batch, channels, height * up, width * up)  # [B, C, H*up, W*up]
    px0, px1, py0, py1 = padding
    if any(p > 0 for p in padding):  # a Pad node copies the tensor even when it pads nothing
        x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    if any(p < 0 for p in padding):  # negative padding crops
        height, width = x.shape[2], x.shape[3]
        x = x[:, :, -min(py0, 0) : height + min(py1, 0), -min(px0, 0) : width + min(px1, 0)]
    if f is None:
        x = x[:, :, ::down, ::down] if down > 1 else x
        return x * gain if gain != 1 else x
    f = (f * gain ** (f.ndim / 2)).to(x.dtype).flip(list(range(f.ndim)))  # convolution, not corr.
    if f.ndim == 2:
        kernel = f[None, None].expand(channels, 1, *f.shape).contiguous()  # [C, 1, K, K]
        return F.conv2d(x, kernel, stride=down, groups=channels)
    kernel = f[None, None, None].expand(channels, 1, 1, f.shape[0]).contiguous()  # [C, 1, 1, K]
    x = F.conv2d(x, kernel, stride=(1, down), groups=channels)
    return F.conv2d(x, kernel.transpose(2, 3), stride=(down, 1), groups=channels)


def upsample_separable(
    x: torch.Tensor, f: torch.Tensor, *, up: int, padding: tuple[int, int, int, int], gain: float
) -> torch.Tensor:
    """`upfirdn2d(x, f, up=up, padding=padding, gain=gain)` for a separable f [K], polyphase.

    Fast path: each axis is one strided transposed convolution, which skips the products with the
    inserted zeros instead of computing them (the same sums), then the padding of the reference
    becomes a shift of that full convolution: its symmetric part a crop inside the transposed
    convolution, the rest a pad or a narrow (each left out when it does nothing: an exported Pad
    or Slice copies the tensor). x [B, C, H, W] -> [B, C, H', W'].
    """
    channels, taps = x.shape[1], f.shape[0]
    kernel = (f * gain**0.5).to(x.dtype).view(1, 1, 1, taps).expand(channels, 1, 1, taps)
    kernel = kernel.contiguous()  # [C, 1, 1, K]; a transposed conv convolves (no flip needed)
    px0, px1, py0, py1 = padding
    for axis, (pad_lo, pad_hi) in ((3, (px0, px1)), (2, (py0, py1))):
        length = x.shape[axis]
        # Reference sample i is sample i + (taps - 1 - pad_lo) of the full convolution.
        start = taps - 1 - pad_lo
        end = length * up + pad_hi  # exclusive; the full convolution has (length-1)*up + taps
        full = (length - 1) * up + taps
        crop = max(min(start, full - end), 0)  # cut from both ends by the transposed conv
        start, end, full = start - crop, end - crop, full - 2 * crop
        if axis == 3:
            x = F.conv_transpose2d(x, kernel, stride=(1, up), padding=(0, crop), groups=channels)
        else:
            x = F.conv_transpose2d(
                x, kernel.transpose(2, 3), stride=(up, 1), padding=(crop, 0), groups=channels
            )
        pads = [0, 0] * (3 - axis) + [max(-start, 0), max(end - full, 0)]
        if any(pads):
            x = F.pad(x, pads)
        if max(start, 0) > 0 or end - start < x.shape[axis]:
            x = x.narrow(axis, max(start, 0), end - start)
    return x


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor,
    *,
    up: int,
    down: int,
    padding: tuple[int, int, int, int],
    gain: float,
    slope: float,
    clamp: float | None,
) -> torch.Tensor:
    """NVlabs' `_filtered_lrelu_ref`: bias, upsample by `fu`, leaky ReLU * gain, clamp, downsample.

    x [B, C, H, W] -> [B, C, H', W'] with H' = (H*up + py0 + py1 - (|fu|-1) - (|fd|-1)) // down.
    Bound by a test to those reference ops in that order.
    """
    channels = x.shape[1]
    x = x + b.view(1, -1, 1, 1)
    extra = -channels % _CHANNEL_BLOCK if fu is not None or fd is not None else 0
    if extra:  # zero channels, dropped at the end (see _CHANNEL_BLOCK)
        x = F.pad(x, [0, 0, 0, 0, 0, extra])
    if fu is not None and fu.ndim == 1 and up > 1:
        x = upsample_separable(x, fu, up=up, padding=padding, gain=up**2)
    else:
        x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)
    if slope != 1:
        x = F.leaky_relu(x, slope)
    # clamp(g * y, c) = g * clamp(y, c / g), and the gain g rides in the down filter: one pass
    # less over the largest (upsampled) tensor
    if clamp is not None:
        x = x.clamp(-clamp / gain, clamp / gain)
    x = upfirdn2d(x, fd, down=down, gain=gain)
    return x[:, :channels] if extra else x


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    *,
    demodulate: bool,
    padding: int,
    input_gain: torch.Tensor,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution as input scaling, shared-weight conv, output scaling.

    x [B, I, H, W], weight [O, I, k, k], styles [B, I], input_gain [] -> [B, O, H', W']. Equal to
    NVlabs' per-sample weights w[b] = weight * styles[b] * demod[b] * input_gain (see module doc
    for the per-sample style normalization).
    """
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()  # [B, I]
    x = x * (styles * input_gain).view(*styles.shape, 1, 1)
    x = F.conv2d(x, weight, padding=padding)  # [B, O, H', W']
    if demodulate:
        # sum over (i, k) of (weight[o, i, k] * styles[b, i])^2, as [B, O]
        energy = styles.square() @ weight.square().sum(dim=[2, 3]).t()
        x = x * (energy + _NORM_EPS).rsqrt().view(*energy.shape, 1, 1)
    return x


# ------------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    """Equalized-lr dense layer (`weight` [out, in], `bias` [out]), NVlabs' FullyConnectedLayer.

    y = x @ (weight * lr_mul / sqrt(in)).T + bias * lr_mul; with `lrelu`, then leaky ReLU 0.2 and
    gain sqrt 2. x [B, in] -> y [B, out].
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, lr_multiplier: float = 1.0, lrelu: bool = False
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_multiplier)
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.weight_gain = lr_multiplier / math.sqrt(in_dim)
        self.bias_gain = lr_multiplier
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)  # [B, out]
        return F.leaky_relu(x, _LRELU_SLOPE) * _LRELU_GAIN if self.lrelu else x


def _normalize_2nd_moment(x: torch.Tensor) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + _NORM_EPS).rsqrt()


class MappingNetwork(nn.Module):
    """z [B, Z] (and one-hot class c [B, C] when c_dim > 0) -> w [B, D]; holds `w_avg` [D].

    Normalized z, concatenated with the normalized class embedding (`embed`), through
    `fc0..fc{n-1}` (lrelu, lr_mul 0.01). No truncation here (see `StyleGAN3Generator`).
    """

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        c = config
        self.embed = FullyConnectedLayer(c.c_dim, c.w_dim) if c.c_dim > 0 else None
        in_dim = c.z_dim + (c.w_dim if c.c_dim > 0 else 0)
        self.fcs: list[FullyConnectedLayer] = []
        for index in range(c.mapping_layers):
            fc = FullyConnectedLayer(
                in_dim, c.w_dim, lr_multiplier=c.mapping_lr_multiplier, lrelu=True
            )
            self.add_module(f"fc{index}", fc)
            self.fcs.append(fc)
            in_dim = c.w_dim
        self.register_buffer("w_avg", torch.zeros(c.w_dim))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        x = _normalize_2nd_moment(z.float())  # [B, Z]
        if self.embed is not None:
            y = _normalize_2nd_moment(self.embed(c))  # [B, D]
            x = torch.cat([x, y], dim=1)
        for fc in self.fcs:
            x = fc(x)
        return x  # [B, D]


class SynthesisInput(nn.Module):
    """ws[:, 0] [B, D] -> Fourier features [B, C, S, S].

    `affine` turns w into a rotation (r_c, r_s) and translation (t_x, t_y) applied, with the
    user transform `transform` [3, 3], to the fixed frequencies `freqs` [C, 2] and `phases` [C];
    the features are sampled on an S x S grid, damped outside the band and mixed by `weight` [C, C].
    """

    def __init__(
        self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float
    ) -> None:
        super().__init__()
        self.channels = channels
        self.sampling_rate = float(sampling_rate)
        self.bandwidth = float(bandwidth)
        freqs = torch.randn(channels, 2)
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        self.weight = nn.Parameter(torch.randn(channels, channels))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # NVlabs: weight_init=0, bias_init=[1, 0, 0, 0] (identity)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", torch.rand(channels) - 0.5)
        theta = torch.eye(2, 3)
        theta[0, 0] = 0.5 * size / self.sampling_rate
        theta[1, 1] = 0.5 * size / self.sampling_rate
        grid = F.affine_grid(theta[None], [1, 1, size, size], align_corners=False)  # [1, S, S, 2]
        self.register_buffer("grid", grid, persistent=False)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        t = self.affine(w)  # [B, 4] = (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        r_c, r_s, t_x, t_y = t.unbind(dim=1)  # [B] each
        one, zero = torch.ones_like(r_c), torch.zeros_like(r_c)
        rotation = torch.stack([r_c, -r_s, zero, r_s, r_c, zero, zero, zero, one], dim=1)
        translation = torch.stack([one, zero, -t_x, zero, one, -t_y, zero, zero, one], dim=1)
        # First rotate the image, then translate, then apply the user transform (all inverse).
        transforms = rotation.view(-1, 3, 3) @ translation.view(-1, 3, 3) @ self.transform[None]
        freqs = self.freqs[None]  # [1, C, 2]
        phases = self.phases[None] + (freqs @ transforms[:, :2, 2:]).squeeze(2)  # [B, C]
        freqs = freqs @ transforms[:, :2, :2]  # [B, C, 2]
        band = self.sampling_rate / 2 - self.bandwidth
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / band).clamp(0, 1)  # [B, C]
        x = (self.grid.unsqueeze(3) @ freqs.permute(0, 2, 1)[:, None, None]).squeeze(3)
        x = x + phases[:, None, None]  # [B, S, S, C]
        x = torch.sin(x * (np.pi * 2)) * amplitudes[:, None, None]
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)  # [B, C, S, S]


class SynthesisLayer(nn.Module):
    """A StyleGAN3 layer: modulated conv, filtered leaky ReLU. x [B, I, s, s] -> [B, O, s', s'].

    Parameters: `affine` (w -> styles [B, I]), `weight` [O, I, k, k], `bias` [O]; buffers
    `magnitude_ema` [] (the input gain is its rsqrt), `up_filter` and `down_filter` (absent when a
    filter has one tap). The ToRGB layer is linear (no demodulation, gain 1, slope 1, 1x1 conv).
    """

    def __init__(
        self,
        config: StyleGAN3Config,
        *,
        is_torgb: bool,
        is_critically_sampled: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
    ) -> None:
        super().__init__()
        c = config
        self.is_torgb = is_torgb
        self.conv_kernel = 1 if is_torgb else c.conv_kernel
        self.conv_clamp = None if c.conv_clamp is None else float(c.conv_clamp)
        self.gain = 1.0 if is_torgb else _LRELU_GAIN
        self.slope = 1.0 if is_torgb else _LRELU_SLOPE
        self.style_gain = 1 / math.sqrt(in_channels * self.conv_kernel**2) if is_torgb else 1.0
        self.affine = FullyConnectedLayer(c.w_dim, in_channels)
        with torch.no_grad():
            self.affine.bias.fill_(1.0)
        self.weight = nn.Parameter(
            torch.randn(out_channels, in_channels, self.conv_kernel, self.conv_kernel)
        )
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("magnitude_ema", torch.ones([]))

        tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (
            1 if is_torgb else c.lrelu_upsampling
        )
        self.up_factor = int(np.rint(tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(tmp_sampling_rate / out_sampling_rate))
        up_taps = c.filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        down_taps = c.filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        radial = c.use_radial_filters and not is_critically_sampled
        self.register_buffer(
            "up_filter", lowpass_filter(up_taps, in_cutoff, in_half_width * 2, tmp_sampling_rate)
        )
        self.register_buffer(
            "down_filter",
            lowpass_filter(
                down_taps, out_cutoff, out_half_width * 2, tmp_sampling_rate, radial=radial
            ),
        )
        # Padding of the upsampled image so the output has out_size samples, placed symmetrically.
        pad_total = (out_size - 1) * self.down_factor + 1
        pad_total -= (in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = (pad_lo, pad_hi, pad_lo, pad_hi)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)  # [B, I]
        if self.is_torgb:
            styles = styles * self.style_gain
        x = modulated_conv2d(
            x,
            self.weight,
            styles,
            demodulate=not self.is_torgb,
            padding=self.conv_kernel - 1,
            input_gain=self.magnitude_ema.rsqrt(),
        )
        return filtered_lrelu(
            x,
            self.up_filter,
            self.down_filter,
            self.bias,
            up=self.up_factor,
            down=self.down_factor,
            padding=self.padding,
            gain=self.gain,
            slope=self.slope,
            clamp=self.conv_clamp,
        )


def lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, *, radial: bool = False
) -> torch.Tensor | None:
    """NVlabs' `design_lowpass_filter`: Kaiser-windowed FIR [numtaps] or jinc [numtaps, numtaps].

    None for a single tap (identity). Filters of a loaded model come from its state dict; this
    designs them for a freshly built one.
    """
    if numtaps == 1:
        return None
    import scipy.signal
    import scipy.special

    if not radial:
        f = scipy.signal.firwin(numtaps=numtaps, cutoff=cutoff, width=width, fs=fs)
        return torch.as_tensor(f, dtype=torch.float32)
    x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(x, x))
    f = scipy.special.j1(2 * cutoff * (np.pi * r)) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    window = np.kaiser(numtaps, beta)
    f *= np.outer(window, window)
    f /= np.sum(f)
    return torch.as_tensor(f, dtype=torch.float32)


class SynthesisNetwork(nn.Module):
    """ws [B, L, D] -> images [B, 3, R, R]: `input`, then layers `L{i}_{size}_{channels}`.

    Cutoffs, stopbands, sampling rates, sizes and channels follow NVlabs' geometric progression
    (margin of `margin_size` samples on every side except for the last two layers).
    """

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        c = config
        self.output_scale = float(c.output_scale)
        last_cutoff = c.img_resolution / 2
        last_stopband = last_cutoff * c.last_stopband_rel
        exponents = np.minimum(np.arange(c.num_layers + 1) / (c.num_layers - c.num_critical), 1)
        cutoffs = c.first_cutoff * (last_cutoff / c.first_cutoff) ** exponents
        stopbands = c.first_stopband * (last_stopband / c.first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, c.img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + c.margin_size * 2
        sizes[-2:] = c.img_resolution
        channels = np.rint(np.minimum((c.channel_base / 2) / cutoffs, c.channel_max))
        channels[-1] = c.img_channels

        self.input = SynthesisInput(
            c.w_dim, int(channels[0]), int(sizes[0]), sampling_rates[0], cutoffs[0]
        )
        self.layers: list[SynthesisLayer] = []
        for index in range(c.num_layers + 1):
            prev = max(index - 1, 0)
            layer = SynthesisLayer(
                c,
                is_torgb=index == c.num_layers,
                is_critically_sampled=index >= c.num_layers - c.num_critical,
                in_channels=int(channels[prev]),
                out_channels=int(channels[index]),
                in_size=int(sizes[prev]),
                out_size=int(sizes[index]),
                in_sampling_rate=int(sampling_rates[prev]),
                out_sampling_rate=int(sampling_rates[index]),
                in_cutoff=cutoffs[prev],
                out_cutoff=cutoffs[index],
                in_half_width=half_widths[prev],
                out_half_width=half_widths[index],
            )
            self.add_module(f"L{index}_{int(sizes[index])}_{int(channels[index])}", layer)
            self.layers.append(layer)

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages(), (), ws)

    def stages(self) -> list[Stage]:
        """Synthesis as stages (forward runs them): the Fourier input reads code 0, layer i code
        i + 1; the last (ToRGB) applies the output scale."""
        last = len(self.layers) - 1

        def layer(state: State, ws: torch.Tensor, index: int) -> State:
            x = self.layers[index](state[0], ws[:, index + 1])
            if index == last and self.output_scale != 1:
                x = x * self.output_scale  # [B, 3, R, R]
            return (x,)

        stages = [Stage((0,), lambda s, ws: (self.input(ws[:, 0]),))]  # [B, C0, S0, S0]
        stages += [
            Stage((i + 1,), lambda s, ws, i=i: layer(s, ws, i)) for i in range(len(self.layers))
        ]
        return stages


# ------------------------------------------------------------------------------------------------
# Generator


class StyleGAN3Generator(nn.Module):
    """StyleGAN3: z [B, Z] -> w [B, D] -> wp [B, L, D] -> images [B, 3, R, R] (nominally [-1, 1]).

    Implements the `rescore.models.base.Generator` protocol; L = config.num_layers + 2 (one code
    per synthesis layer, the Fourier input and ToRGB included). Truncation: coefficient
    `truncation_psi` on the first `truncation_layers` codes (default NVlabs' gen_images.py: psi 1,
    all codes, i.e. none). A conditional model (c_dim > 0) draws every image of `class_index`.
    """

    family = "stylegan3"
    layer_wise = True

    def __init__(
        self,
        config: StyleGAN3Config,
        *,
        truncation_psi: float = 1.0,
        truncation_layers: int | None = None,
        class_index: int | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.num_layers = config.num_ws
        self.resolution = config.img_resolution
        self.mapping = MappingNetwork(config)
        self.synthesis = SynthesisNetwork(config)
        layers = self.num_layers if truncation_layers is None else truncation_layers
        coefficients = torch.where(
            torch.arange(self.num_layers) < layers,
            torch.full([self.num_layers], float(truncation_psi)),
            torch.ones(self.num_layers),
        )
        self.register_buffer("truncation", coefficients, persistent=False)  # [L]
        self.register_buffer("label", _one_hot(config.c_dim, class_index), persistent=False)

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z [B, Z] -> w [B, D] (no truncation; the model's class if any)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ShapeMismatchError(
                f"latents z have shape {tuple(z.shape)}, expected [batch, {self.z_dim}]; "
                f"draw z with z_dim={self.z_dim}"
            )
        label = self.label.expand(z.shape[0], -1) if self.label is not None else None
        return self.mapping(z, label)

    def truncation_coefficients(self) -> torch.Tensor:
        """Per-layer truncation coefficient psi_l, shape [L]."""
        return self.truncation

    def average_w(self) -> torch.Tensor:
        """`mapping.w_avg`, shape [D]."""
        return self.mapping.w_avg

    def layer_code_weights(self) -> list[torch.Tensor]:
        """Affine weight consuming each code: [4, D] for the input, [in_channels, D] after."""
        synthesis = self.synthesis
        return [synthesis.input.affine.weight, *(layer.affine.weight for layer in synthesis.layers)]

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """Synthesis: wp [B, L, D] (already truncated) -> images [B, 3, R, R]."""
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ShapeMismatchError(
                f"codes wp have shape {tuple(wp.shape)}, expected "
                f"[batch, {self.num_layers}, {self.w_dim}] for this {self.resolution}px StyleGAN3; "
                f"check that the codes come from the same model"
            )
        return self.synthesis(wp.float())

    def synthesis_stages(self) -> list[Stage]:
        """`synthesize` as stages (`rescore.models.stages`), for generator-prefix reuse. The
        codes reach them as `synthesize` passes them (float32)."""
        return self.synthesis.stages()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, 3, R, R], with the model's truncation."""
        wp = truncate(self.map(z), self.average_w(), self.truncation_coefficients())  # [B, L, D]
        return self.synthesize(wp)


def _one_hot(c_dim: int, class_index: int | None) -> torch.Tensor | None:
    """The conditioning label [1, c_dim] of `class_index`, or None for an unconditional model."""
    if c_dim == 0:
        if class_index is not None:
            raise RescoreError(
                f"--class-index {class_index} was given but this StyleGAN3 is unconditional "
                f"(c_dim=0); leave --class-index out"
            )
        return None
    if class_index is None:
        raise RescoreError(
            f"this StyleGAN3 is conditional on {c_dim} classes; pass --class-index N "
            f"with 0 <= N < {c_dim}"
        )
    if not 0 <= class_index < c_dim:
        raise RescoreError(
            f"--class-index {class_index} is outside the model's {c_dim} classes; "
            f"pass 0 <= N < {c_dim}"
        )
    label = torch.zeros(1, c_dim)
    label[0, class_index] = 1.0
    return label


def from_nvlabs(
    init_kwargs: dict[str, Any], state_dict: dict[str, torch.Tensor], options: GeneratorOptions
) -> StyleGAN3Generator:
    """Build rescore's StyleGAN3 from a pickled NVlabs `networks_stylegan3.Generator` (G_ema).

    `init_kwargs`: the Generator's recorded init kwargs; `state_dict`: its `state_dict()` (keys as
    NVlabs names them); `options`: a `GeneratorOptions` (truncation_psi, truncation_layers,
    class_index; None means psi 1 on every layer, as NVlabs' gen_images.py). Returns an eval-mode
    float32 `StyleGAN3Generator`; a state dict that does not fit raises `CheckpointError`.
    """
    config = config_from_init_kwargs(init_kwargs)
    psi = 1.0 if options.truncation_psi is None else options.truncation_psi
    with torch.random.fork_rng(devices=[]):  # the throw-away random init leaves the caller's RNG
        model = StyleGAN3Generator(
            config,
            truncation_psi=psi,
            truncation_layers=options.truncation_layers,
            class_index=options.class_index,
        )
    state_dict = {k: v.float() for k, v in state_dict.items()}
    load_strict(model, state_dict, path="(pickle G_ema)", what=_WHAT)
    return model.float().eval()


def random_stylegan3(
    config: StyleGAN3Config, *, seed: int = 0, class_index: int | None = None, **truncation: Any
) -> StyleGAN3Generator:
    """A StyleGAN3 with seeded random weights (tests, benchmarks): unit-scale parameters.

    Weights N(0, 1) (mapping weights 1/lr_mul larger, as trained files hold them), biases
    N(0, 0.1^2), magnitude EMAs in [0.5, 2.5], w_avg N(0, 1); filters, frequencies and phases as
    designed and drawn at construction from `seed`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StyleGAN3Generator(config, class_index=class_index, **truncation)
        with torch.no_grad():
            for name, tensor in model.state_dict(keep_vars=True).items():
                if name.endswith(("_filter", "freqs", "phases", "transform")):
                    continue
                values = torch.randn_like(tensor)
                if name.endswith("magnitude_ema"):
                    values = 0.5 + 2.0 * torch.rand_like(tensor)
                elif name.endswith("bias"):
                    values = 0.1 * values
                if name.startswith("mapping.fc"):
                    values = values / config.mapping_lr_multiplier
                tensor.copy_(values)
    return model.eval()
