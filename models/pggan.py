"""PGGAN generator in the layout of the genforce/HiGAN PyTorch checkpoints.

The progressive GAN (Karras et al. 2018) that HiGAN and InterFaceGAN study: z -> (pixel norm) ->
a dense layer to 4x4 (stored as a 4x4 convolution on a 1x1 input, padding 3) -> per resolution
two 3x3 equalized-lr convolutions, each after pixel norm (the first one after a nearest 2x
upsample), leaky ReLU 0.2 -> ToRGB (1x1, linear) of the last resolution.

PGGAN has no mapping network and feeds its one latent to the first layer only, so rescore's
geometry is degenerate: w = z (`map` is the identity), one code (L = 1), no truncation (w_avg
zeros, coefficients ones). Only Z-space boundaries and the all-layers row of re-scoring exist
(`layer_wise = False`). The first layer's pixel norm normalises z exactly as genforce does, so z
may come at any scale.

Numerics follow HiGAN's `pggan_generator_network.py` (convolution, then x * wscale + bias);
parameter names and shapes follow the published files (`pggan_bedroom256_generator.pth`, ...),
which load with strict=True.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import as_state_dict, guess_family, load_strict, read_checkpoint
from .errors import CheckpointError, ShapeMismatchError

_RESOLUTIONS_ALLOWED = (8, 16, 32, 64, 128, 256, 512, 1024)
_INIT_RES = 4
_LRELU_SLOPE = 0.2
_NORM_EPS = 1e-8
_WHAT = "PGGAN generator checkpoint"


def pggan_channels(resolution: int, fmaps_base: int = 16 << 10, fmaps_max: int = 512) -> list[int]:
    """Channels of each block (4x4, 8x8, ..., resolution), genforce's min(base // res, max)."""
    num_blocks = int(math.log2(resolution)) - 1
    return [min(fmaps_base // (_INIT_RES * 2**b), fmaps_max) for b in range(num_blocks)]


def pixel_norm(x: torch.Tensor) -> torch.Tensor:
    """Normalise each position's feature vector to unit RMS: x [B, C, ...] -> same shape."""
    return x / torch.sqrt(torch.mean(x**2, dim=1, keepdim=True) + _NORM_EPS)


class _Bias(nn.Module):
    """Holds `bias` [C], so keys read as in the published files (`layer0.wscale.bias`)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))


class ConvBlock(nn.Module):
    """pixel norm -> [nearest 2x upsample] -> conv (no bias) -> * wscale + bias -> [leaky ReLU].

    Stored as `conv.weight` [out, in, k, k] and `wscale.bias` [out];
    wscale = gain / sqrt(in * k * k). x [B, in, R, R] -> [B, out, R', R'].
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        padding: int = 1,
        upsample: bool = False,
        gain: float = math.sqrt(2.0),
        lrelu: bool = True,
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=False)
        self.wscale = _Bias(out_channels)
        self.scale = gain / math.sqrt(in_channels * kernel_size * kernel_size)
        self.padding = padding
        self.upsample = upsample
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, in, 2R, 2R]
        x = F.conv2d(x, self.conv.weight, padding=self.padding)  # [B, out, R', R']
        x = x * self.scale + self.wscale.bias.view(1, -1, 1, 1)
        return F.leaky_relu(x, _LRELU_SLOPE) if self.lrelu else x


class PGGANGenerator(nn.Module):
    """PGGAN generator: z [B, Z] -> images [B, 3, R, R] in [-1, 1] (not clipped).

    Implements `rescore.models.base.Generator` with w = z and one code (L = 1): wp [B, 1, Z].
    `channels` lists the feature maps of each block (4x4 ... R x R); `pggan_channels` gives
    genforce's defaults. Modules `layer{2b}`, `layer{2b+1}`, `output{b}` and the `lod` buffer
    are named as in the published files; only lod = 0 (a finished model) is supported.
    """

    family = "pggan"
    layer_wise = False

    def __init__(
        self, resolution: int, *, z_space_dim: int = 512, channels: Sequence[int] | None = None
    ) -> None:
        super().__init__()
        if resolution not in _RESOLUTIONS_ALLOWED:
            raise ValueError(
                f"PGGAN resolution {resolution} is not supported; "
                f"use one of {list(_RESOLUTIONS_ALLOWED)}"
            )
        channels = list(pggan_channels(resolution) if channels is None else channels)
        self.num_blocks = int(math.log2(resolution)) - 1
        if len(channels) != self.num_blocks:
            raise ValueError(f"channels must list {self.num_blocks} blocks, got {len(channels)}")
        self.resolution = resolution
        self.z_dim = z_space_dim
        self.w_dim = z_space_dim
        self.num_layers = 1
        self.register_buffer("lod", torch.zeros(()))
        for block, out_channels in enumerate(channels):
            if block == 0:  # the dense layer: a 4x4 conv on the 1x1 latent, padding 3
                first = ConvBlock(z_space_dim, out_channels, kernel_size=_INIT_RES, padding=3)
            else:
                first = ConvBlock(channels[block - 1], out_channels, upsample=True)
            self.add_module(f"layer{2 * block}", first)
            self.add_module(f"layer{2 * block + 1}", ConvBlock(out_channels, out_channels))
            to_rgb = ConvBlock(out_channels, 3, kernel_size=1, padding=0, gain=1.0, lrelu=False)
            self.add_module(f"output{block}", to_rgb)

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """The identity, z [B, Z] -> w = z [B, Z]: PGGAN has no mapping network."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ShapeMismatchError(
                f"latents z have shape {tuple(z.shape)}, expected [batch, {self.z_dim}]; "
                f"draw z with z_dim={self.z_dim}"
            )
        return z

    def truncation_coefficients(self) -> torch.Tensor:
        """Ones [1]: PGGAN is not truncated."""
        return torch.ones(1, device=self.lod.device)

    def average_w(self) -> torch.Tensor:
        """Zeros [Z]: with no mapping there is no w_avg to truncate towards."""
        return torch.zeros(self.z_dim, device=self.lod.device)

    def layer_code_weights(self) -> list[torch.Tensor]:
        """For SeFa: the dense layer's weight as [16 * C, Z], one row per output unit.

        Rows are genforce SeFa's columns, in its order: `conv.weight` [C, Z, 4, 4] flipped in
        space (the TF dense layer's order), permuted to [Z, C, 4, 4], flattened, transposed.
        """
        weight = self.layer0.conv.weight  # [C, Z, 4, 4]
        return [weight.flip(2, 3).permute(1, 0, 2, 3).flatten(1).T]

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """wp [B, 1, Z] -> images [B, 3, R, R]."""
        if wp.ndim != 3 or wp.shape[1:] != (1, self.z_dim):
            raise ShapeMismatchError(
                f"codes wp have shape {tuple(wp.shape)}, expected [batch, 1, {self.z_dim}] for "
                f"this {self.resolution}px PGGAN; check that the codes come from the same model"
            )
        x = wp.reshape(wp.shape[0], self.z_dim, 1, 1)  # [B, Z, 1, 1]
        for block in range(self.num_blocks):
            x = getattr(self, f"layer{2 * block}")(x)  # [B, C, R, R]
            x = getattr(self, f"layer{2 * block + 1}")(x)
        # With lod = 0 only the last ToRGB reaches the image (genforce computes and drops others).
        return getattr(self, f"output{self.num_blocks - 1}")(x)  # [B, 3, R, R]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, 3, R, R]."""
        return self.synthesize(self.map(z).unsqueeze(1))


def _architecture_in_file(
    state_dict: dict[str, torch.Tensor], path: Path
) -> tuple[int, int, list[int]]:
    """(resolution, z_dim, channels per block) of a PGGAN state dict, from its weight shapes."""
    first = state_dict.get("layer0.conv.weight")
    if first is None or first.ndim != 4 or tuple(first.shape[2:]) != (_INIT_RES, _INIT_RES):
        looks_like = guess_family(state_dict)
        raise CheckpointError(
            f"{path} is not a PGGAN generator checkpoint (no 4x4 'layer0.conv.weight'"
            f"{f'; it looks like a {looks_like} checkpoint' if looks_like else ''}); "
            f"pass a file like pggan_bedroom256_generator.pth"
            f"{f' or load it as --generator {looks_like}=PATH' if looks_like else ''}"
        )
    fused = sorted(k for k in state_dict if k.startswith("layer") and k.endswith(".weight"))
    fused = [k for k in fused if not k.endswith("conv.weight")]
    if fused:
        raise CheckpointError(
            f"{_WHAT} {path} uses fused upscaling ({fused[0]}), which no published PGGAN "
            f"does; convert it with fused_scale=False"
        )
    num_blocks = sum(1 for k in state_dict if k.startswith("output") and k.endswith("conv.weight"))
    resolution = _INIT_RES * 2 ** (num_blocks - 1)
    if resolution not in _RESOLUTIONS_ALLOWED:
        raise CheckpointError(
            f"{_WHAT} {path} has {num_blocks} ToRGB layers, which matches no supported "
            f"resolution {list(_RESOLUTIONS_ALLOWED)}; pass an unmodified published file"
        )
    channels = []
    for block in range(num_blocks):
        weight = state_dict.get(f"layer{2 * block}.conv.weight")
        if weight is None or weight.ndim != 4:
            raise CheckpointError(
                f"{_WHAT} {path} lacks layer{2 * block}.conv.weight for its {resolution}px "
                f"resolution; pass an unmodified published file"
            )
        channels.append(int(weight.shape[0]))
    return resolution, int(first.shape[1]), channels


def load_pggan(path: Path | str) -> PGGANGenerator:
    """Load a genforce/HiGAN PGGAN checkpoint (plain state dict) into an eval-mode float32 model.

    Resolution, z_dim and channels are read from the weights. Raises `CheckpointError` for a
    missing, corrupt, unsafe or non-PGGAN file (naming the family it looks like), a file saved
    mid-training (lod != 0), and lists missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    state_dict = as_state_dict(read_checkpoint(path, what=_WHAT), path=path, what=_WHAT)
    resolution, z_dim, channels = _architecture_in_file(state_dict, path)
    with torch.random.fork_rng(devices=[]):  # the throw-away random init leaves the caller's RNG
        model = PGGANGenerator(resolution, z_space_dim=z_dim, channels=channels)
    load_strict(model, state_dict, path=path, what=_WHAT)
    lod = float(model.lod)
    if lod != 0.0:
        raise CheckpointError(
            f"{_WHAT} {path} has lod {lod}: it was saved during progressive training and does "
            f"not paint at its full resolution; pass a finished model (lod 0)"
        )
    return model.float().eval()


def save_random_pggan(
    path: Path | str,
    *,
    resolution: int,
    z_space_dim: int = 512,
    channels: Sequence[int] | None = None,
    seed: int = 0,
) -> Path:
    """Write a seeded random PGGAN checkpoint in the published layout; returns the path.

    For tests and benchmarks (no pretrained weights can be downloaded): weights N(0, 1) (the
    equalized-lr convention keeps activations at unit scale), biases N(0, 0.1^2), lod 0.
    """
    with torch.random.fork_rng(devices=[]):
        model = PGGANGenerator(resolution, z_space_dim=z_space_dim, channels=channels)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name == "lod":
                continue
            values = torch.randn(tensor.shape, generator=generator)
            tensor.copy_(values * 0.1 if name.endswith("bias") else values)
    path = Path(path)
    torch.save(model.state_dict(), path)
    return path
