"""BigGAN-deep generator in the layout of the PyTorch port of DeepMind's BigGAN.

The community's BigGAN checkpoints are those of huggingface/pytorch-pretrained-BigGAN: a
directory with `config.json` (a `BigGANConfig` as JSON) and `pytorch_model.bin` (the port's
`state_dict()`, spectral-norm layers stored as `weight_orig`, `weight_u`, `weight_v`). That port
is BigGAN-*deep*: every block reads the full conditioning vector [z, class embedding] through
its conditional batch norms (original BigGAN instead splits z into one chunk per block).

Latent geometry in rescore's terms (see `rescore.models.base`):
    z   [B, Z]     standard normal (rescore's latent source)
    w   [B, Z]     `map(z)`: z moved deterministically onto BigGAN's truncated normal, times psi:
                   w = psi * Phi^-1(Phi(-2) + Phi(z) (Phi(2) - Phi(-2))), the inverse-CDF sampler
                   of truncnorm(-2, 2) that the port's `truncated_noise_sample` draws from
    wp  [B, L, Z]  one copy of z per *conditioned layer*: layer 0 is the dense `gen_z`, layer
                   1 + j the j-th GenBlock. Moving layer l's copy alone is the BigGAN analogue
                   of a W+ layer edit; wp = w broadcast (no truncation towards a mean: w_avg is
                   zero, coefficients one).
The class is fixed per model (`class_index`); its embedding is one-hot @ `embeddings.weight`.T.
psi also selects the batch-norm statistics the port blends from its `n_stats` precomputed sets,
exactly as the port does (including its `math.modf` blend weights).

Numerics follow the port's `model.py` in eval mode (spectral norm: weight_orig / (u . W v) with
the stored u, v; no power iteration).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import as_state_dict, guess_family, load_strict, read_checkpoint
from .errors import CheckpointError, RescoreError, ShapeMismatchError
from .stages import Stage, State, run_stages

WEIGHTS_NAME = "pytorch_model.bin"
CONFIG_NAME = "config.json"
DEFAULT_TRUNCATION = 0.4  # the value the port's README and examples use
TRUNCATION_BOUND = 2.0  # the port samples truncnorm(-2, 2)
_WHAT = "BigGAN checkpoint"


@dataclass(frozen=True)
class BigGANConfig:
    """The port's `BigGANConfig` (defaults of its 128 px model): `layers` are
    (upsample, in_channels / channel_width, out_channels / channel_width) per GenBlock."""

    output_dim: int = 128
    z_dim: int = 128
    class_embed_dim: int = 128
    channel_width: int = 128
    num_classes: int = 1000
    layers: tuple[tuple[bool, int, int], ...] = (
        (False, 16, 16), (True, 16, 16), (False, 16, 16), (True, 16, 8), (False, 8, 8),
        (True, 8, 4), (False, 4, 4), (True, 4, 2), (False, 2, 2), (True, 2, 1),
    )  # fmt: skip
    attention_layer_position: int = 8
    eps: float = 1e-4
    n_stats: int = 51

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, path: Path | str = CONFIG_NAME) -> BigGANConfig:
        """Validate a config.json object (unknown keys refused, types and geometry checked)."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise CheckpointError(
                f"BigGAN config {path} has unknown keys {unknown}; "
                f"pass the config.json of pytorch-pretrained-BigGAN (keys: {sorted(known)})"
            )
        merged = {**cls().__dict__, **values}
        try:
            layers = tuple((bool(up), int(a), int(b)) for up, a, b in merged["layers"])
            config = cls(
                **{k: int(merged[k]) for k in known - {"layers", "eps"}},
                layers=layers,
                eps=float(merged["eps"]),
            )
        except (TypeError, ValueError) as error:
            raise CheckpointError(
                f"BigGAN config {path} has a malformed value ({error}); pass the config.json "
                f"that came with the weights"
            ) from error
        config._check(path)
        return config

    def _check(self, path: Path | str) -> None:
        problems = []
        if not self.layers or self.layers[0][1] != 16:
            problems.append("the first layer must take 16 channel widths (gen_z's output)")
        if self.layers and self.layers[-1][2] != 1:
            problems.append("the last layer must output 1 channel width")
        for up, inp, out in self.layers:
            if out != inp and 2 * out != inp:
                problems.append(f"layer ({up}, {inp}, {out}) must keep or halve its channels")
        if self.channel_width < 3 or self.n_stats < 2:
            problems.append("channel_width must be >= 3 and n_stats >= 2")
        if 4 * 2 ** sum(up for up, _, _ in self.layers) != self.output_dim:
            problems.append(f"the layers' upsamplings do not reach output_dim {self.output_dim}")
        if problems:
            raise CheckpointError(
                f"BigGAN config {path} is inconsistent ({'; '.join(problems)}); pass the "
                f"config.json that came with the weights"
            )

    @property
    def num_blocks(self) -> int:
        return len(self.layers)


# ----------------------------------------------------------------------------------------------
# z -> truncated normal (ONNX-exportable: Erf and a rational inverse, no special-function ops)

_CENTRAL_A = (3.387132872796366608, 133.14166789178437745, 1971.5909503065514427,
              13731.693765509461125, 45921.953931549871457, 67265.770927008700853,
              33430.575583588128105, 2509.0809287301226727)  # fmt: skip
_CENTRAL_B = (1.0, 42.313330701600911252, 687.1870074920579083, 5394.1960214247511077,
              21213.794301586595867, 39307.89580009271061, 28729.085735721942674,
              5226.495278852545925)  # fmt: skip
_TAIL_C = (1.42343711074968357734, 4.6303378461565452959, 5.7694972214606914055,
           3.64784832476320460504, 1.27045825245236838258, 0.24178072517745061177,
           0.0227238449892691845833, 7.7454501427834140764e-4)  # fmt: skip
_TAIL_D = (1.0, 2.05319162663775882187, 1.6763848301838038494, 0.68976733498510000455,
           0.14810397642748007459, 0.0151986665636164571966, 5.475938084995344946e-4,
           1.05075007164441684324e-9)  # fmt: skip


def normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x) of the standard normal, elementwise (via erf)."""
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _poly(coefficients: tuple[float, ...], r: torch.Tensor) -> torch.Tensor:
    value = torch.full_like(r, coefficients[-1])
    for c in reversed(coefficients[:-1]):
        value = value * r + c
    return value


def normal_ppf(p: torch.Tensor) -> torch.Tensor:
    """Phi^-1(p) for p in [1e-11, 1 - 1e-11] (Wichura's AS 241, about 1e-16 relative in float64).

    Two of AS 241's three branches: the far tail (p < 1e-11) is never reached by `truncate_z`,
    whose p stays within [Phi(-2), Phi(2)]. Reference: `torch.special.ndtri` (a test binds them).
    """
    q = p - 0.5
    r_central = 0.180625 - q * q
    central = q * _poly(_CENTRAL_A, r_central) / _poly(_CENTRAL_B, r_central)
    r_tail = torch.sqrt(-torch.log(torch.minimum(p, 1.0 - p))) - 1.6
    tail = torch.sign(q) * _poly(_TAIL_C, r_tail) / _poly(_TAIL_D, r_tail)
    return torch.where(q.abs() <= 0.425, central, tail)


def truncate_z(z: torch.Tensor, psi: float) -> torch.Tensor:
    """Standard-normal z [B, Z] -> psi * truncnorm(-2, 2) [B, Z], monotone and deterministic."""
    lo, hi = (0.5 * (1.0 + math.erf(b / math.sqrt(2.0))) for b in (-2.0, 2.0))  # Phi(-+2)
    p = lo + normal_cdf(z) * (hi - lo)  # [B, Z] in [Phi(-2), Phi(2)]
    return psi * normal_ppf(p).clamp(-TRUNCATION_BOUND, TRUNCATION_BOUND)


# ----------------------------------------------------------------------------------------------
# Layers (module and parameter names are the port's, so its state_dict loads with strict=True)


class SpectralNormed(nn.Module):
    """A linear (2-D weight) or convolution (4-D weight) layer under spectral normalisation.

    Stored as `weight_orig`, `weight_u` [out], `weight_v` [in * k * k] and optional `bias`; the
    effective weight is weight_orig / (u . (W v)), torch's `spectral_norm` in eval mode. It is a
    constant of the weights, so it is computed once per load (`refresh`, run by a load hook) into
    the non-persistent buffer `weight`: forward and exported graphs skip the normalisation.
    """

    def __init__(self, shape: tuple[int, ...], *, bias: bool, padding: int = 0) -> None:
        super().__init__()
        self.weight_orig = nn.Parameter(torch.randn(shape))
        self.bias = nn.Parameter(torch.zeros(shape[0])) if bias else None
        self.register_buffer("weight_u", torch.randn(shape[0]))
        self.register_buffer("weight_v", torch.randn(math.prod(shape[1:])))
        self.register_buffer("weight", torch.empty(shape), persistent=False)
        self.padding = padding
        self.refresh()
        self.register_load_state_dict_post_hook(_refresh)

    def normalized_weight(self) -> torch.Tensor:
        """weight_orig / sigma with sigma = u . (W v), shaped as `weight_orig`."""
        matrix = self.weight_orig.flatten(1)  # [out, in * k * k]
        sigma = torch.dot(self.weight_u, torch.mv(matrix, self.weight_v))
        return self.weight_orig / sigma

    @torch.no_grad()
    def refresh(self) -> None:
        """Recompute the cached `weight` (after the stored tensors changed)."""
        self.weight.copy_(self.normalized_weight())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.ndim == 2:
            return F.linear(x, self.weight, self.bias)  # [B, out]
        return F.conv2d(x, self.weight, self.bias, padding=self.padding)  # [B, out, H, W]


def _refresh(module: nn.Module, incompatible_keys: object) -> None:
    """Load post-hook: recompute what a module caches from its stored tensors."""
    module.refresh()


@dataclass(frozen=True)
class StatsBlend:
    """Which precomputed batch-norm statistics a truncation selects, as the port computes it:
    coef, start = modf(psi / step); stats = s[start] * coef + s[start + 1] * (1 - coef)
    (s[start] alone when coef == 0)."""

    start: int
    coef: float

    @classmethod
    def for_truncation(cls, psi: float, n_stats: int) -> StatsBlend:
        coef, start = math.modf(psi / (1.0 / (n_stats - 1)))
        return cls(int(start), coef)

    def pick(self, stats: torch.Tensor) -> torch.Tensor:
        """stats [n_stats, C] -> [C]."""
        if self.coef == 0.0:
            return stats[self.start]
        return stats[self.start] * self.coef + stats[self.start + 1] * (1 - self.coef)


class BigGANBatchNorm(nn.Module):
    """Batch norm with precomputed statistics per truncation; conditional gain 1 + scale(c) and
    bias offset(c) from the conditioning vector c [B, 2Z], or a learned affine if unconditional.
    x [B, C, H, W] -> same shape."""

    def __init__(
        self, channels: int, cond_dim: int | None, *, n_stats: int, eps: float, blend: StatsBlend
    ) -> None:
        super().__init__()
        self.register_buffer("running_means", torch.zeros(n_stats, channels))
        self.register_buffer("running_vars", torch.ones(n_stats, channels))
        self.conditional = cond_dim is not None
        if self.conditional:
            self.scale = SpectralNormed((channels, cond_dim), bias=False)
            self.offset = SpectralNormed((channels, cond_dim), bias=False)
        else:
            self.weight = nn.Parameter(torch.ones(channels))
            self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps
        self.blend = blend
        self.register_buffer("mean", torch.empty(1, channels, 1, 1), persistent=False)
        self.register_buffer("std", torch.empty(1, channels, 1, 1), persistent=False)
        self.refresh()
        self.register_load_state_dict_post_hook(_refresh)

    @torch.no_grad()
    def refresh(self) -> None:
        """Cache the statistics psi selects: `mean` and `std` = sqrt(var + eps), [1, C, 1, 1]."""
        self.mean.copy_(self.blend.pick(self.running_means).view(self.mean.shape))
        var = self.blend.pick(self.running_vars).view(self.std.shape)
        self.std.copy_(torch.sqrt(var + self.eps))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        if self.conditional:
            gain = 1 + self.scale(cond)[:, :, None, None]  # [B, C, 1, 1]
            shift = self.offset(cond)[:, :, None, None]
        else:
            gain, shift = self.weight.view(1, -1, 1, 1), self.bias.view(1, -1, 1, 1)
        return (x - self.mean) / self.std * gain + shift


class SelfAttn(nn.Module):
    """SAGAN self-attention with 2x2 max-pooled keys/values: x [B, C, H, W] -> same shape."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.snconv1x1_theta = SpectralNormed((channels // 8, channels, 1, 1), bias=False)
        self.snconv1x1_phi = SpectralNormed((channels // 8, channels, 1, 1), bias=False)
        self.snconv1x1_g = SpectralNormed((channels // 2, channels, 1, 1), bias=False)
        self.snconv1x1_o_conv = SpectralNormed((channels, channels // 2, 1, 1), bias=False)
        self.gamma = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        theta = self.snconv1x1_theta(x).flatten(2)  # [B, C/8, HW]
        phi = F.max_pool2d(self.snconv1x1_phi(x), 2).flatten(2)  # [B, C/8, HW/4]
        attn = torch.softmax(torch.bmm(theta.transpose(1, 2), phi), dim=-1)  # [B, HW, HW/4]
        g = F.max_pool2d(self.snconv1x1_g(x), 2).flatten(2)  # [B, C/2, HW/4]
        attn_g = torch.bmm(g, attn.transpose(1, 2)).view(batch, channels // 2, height, width)
        return x + self.gamma * self.snconv1x1_o_conv(attn_g)


class GenBlock(nn.Module):
    """BigGAN-deep residual block: 4 x (conditional BN, ReLU, conv) with a 1/4-width bottleneck;
    the skip drops half its channels when the width halves; optional nearest 2x upsample.
    x [B, C_in, R, R], cond [B, 2Z] -> [B, C_out, R', R']."""

    def __init__(
        self, in_ch: int, out_ch: int, cond_dim: int, *, upsample: bool, n_stats: int,
        eps: float, blend: StatsBlend,
    ) -> None:  # fmt: skip
        super().__init__()
        mid = in_ch // 4
        widths = ((in_ch, mid, 1), (mid, mid, 3), (mid, mid, 3), (mid, out_ch, 1))
        for i, (c_in, c_out, k) in enumerate(widths):
            bn = BigGANBatchNorm(c_in, cond_dim, n_stats=n_stats, eps=eps, blend=blend)
            self.add_module(f"bn_{i}", bn)
            self.add_module(
                f"conv_{i}", SpectralNormed((c_out, c_in, k, k), bias=True, padding=k // 2)
            )
        self.upsample = upsample
        self.drop_channels = in_ch != out_ch

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        skip = x
        for i in range(4):
            x = F.relu(getattr(self, f"bn_{i}")(x, cond))
            if i == 1 and self.upsample:
                x = F.interpolate(x, scale_factor=2.0, mode="nearest")
            x = getattr(self, f"conv_{i}")(x)
        if self.drop_channels:
            skip = skip[:, : skip.shape[1] // 2]
        if self.upsample:
            skip = F.interpolate(skip, scale_factor=2.0, mode="nearest")
        return x + skip


class _Trunk(nn.Module):
    """The port's `Generator` (module `generator`): gen_z, layers (GenBlocks and one SelfAttn),
    bn, conv_to_rgb. conds [L, B, 2Z] (one conditioning vector per conditioned layer) -> images."""

    def __init__(self, config: BigGANConfig, blend: StatsBlend) -> None:
        super().__init__()
        ch, cond_dim = config.channel_width, 2 * config.z_dim
        self.gen_z = SpectralNormed((4 * 4 * 16 * ch, cond_dim), bias=True)
        layers: list[nn.Module] = []
        for i, (up, c_in, c_out) in enumerate(config.layers):
            if i == config.attention_layer_position:
                layers.append(SelfAttn(ch * c_in))
            layers.append(
                GenBlock(ch * c_in, ch * c_out, cond_dim, upsample=up, n_stats=config.n_stats,
                         eps=config.eps, blend=blend)
            )  # fmt: skip
        self.layers = nn.ModuleList(layers)
        self.bn = BigGANBatchNorm(ch, None, n_stats=config.n_stats, eps=config.eps, blend=blend)
        self.conv_to_rgb = SpectralNormed((ch, ch, 3, 3), bias=True, padding=1)
        self.channel_width = ch

    def forward(self, conds: list[torch.Tensor]) -> torch.Tensor:
        return run_stages(self.stages(lambda codes, layer: codes[layer]), (), conds)

    def stages(self, condition: Callable[[Any, int], torch.Tensor]) -> list[Stage]:
        """The trunk as stages (forward runs them): `gen_z` reads conditioned layer 0, GenBlock j
        layer j + 1 (with the unconditioned layers after it, the SelfAttn); then ToRGB.
        `condition(codes, layer)` -> that layer's conditioning vector [B, 2Z]."""

        def start(state: State, codes: Any) -> State:
            x = self.gen_z(condition(codes, 0))  # [B, 4 * 4 * 16ch], TF's [4, 4, C] order
            x = x.view(-1, 4, 4, 16 * self.channel_width).permute(0, 3, 1, 2)  # [B, 16ch, 4, 4]
            return (_run_plain(runs[0], x),)

        def block(state: State, codes: Any, j: int) -> State:
            x = blocks[j - 1](state[0], condition(codes, j))
            return (_run_plain(runs[j], x),)

        def to_image(state: State, codes: Any) -> State:
            x = self.conv_to_rgb(F.relu(self.bn(state[0])))  # [B, ch, R, R]
            return (torch.tanh(x[:, :3]),)

        blocks = [layer for layer in self.layers if isinstance(layer, GenBlock)]
        runs: list[list[nn.Module]] = [[]]  # unconditioned layers after gen_z / each GenBlock
        for layer in self.layers:
            if isinstance(layer, GenBlock):
                runs.append([])
            else:
                runs[-1].append(layer)
        stages = [Stage((0,), start)]
        stages += [
            Stage((j,), lambda s, codes, j=j: block(s, codes, j)) for j in range(1, len(blocks) + 1)
        ]
        return [*stages, Stage((), to_image)]


def _run_plain(layers: list[nn.Module], x: torch.Tensor) -> torch.Tensor:
    for layer in layers:
        x = layer(x)
    return x


class BigGANGenerator(nn.Module):
    """BigGAN-deep for one class: z [B, Z] -> images [B, 3, R, R] in [-1, 1].

    Implements `rescore.models.base.Generator` with L = 1 + number of GenBlocks conditioned
    layers (see the module docstring). `truncation_psi` in (0, 1] scales the truncated normal
    and selects the batch-norm statistics.
    """

    family = "biggan"
    layer_wise = True

    def __init__(
        self, config: BigGANConfig, *, class_index: int, truncation_psi: float = DEFAULT_TRUNCATION
    ) -> None:
        super().__init__()
        if not 0.0 < truncation_psi <= 1.0:
            raise RescoreError(
                f"BigGAN truncation {truncation_psi} is outside (0, 1]; pass --truncation-psi "
                f"in (0, 1] (the port's examples use {DEFAULT_TRUNCATION})"
            )
        if not 0 <= class_index < config.num_classes:
            raise RescoreError(
                f"class index {class_index} is outside [0, {config.num_classes}) for this "
                f"BigGAN; pass --class-index N with 0 <= N < {config.num_classes}"
            )
        self.config = config
        self.class_index = class_index
        self.truncation_psi = truncation_psi
        self.resolution = config.output_dim
        self.z_dim = self.w_dim = config.z_dim
        self.num_layers = 1 + config.num_blocks
        self.embeddings = nn.Linear(config.num_classes, config.z_dim, bias=False)  # the port's
        blend = StatsBlend.for_truncation(truncation_psi, config.n_stats)
        self.generator = _Trunk(config, blend)

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] ~ N(0, I) -> w [B, Z] = psi * truncnorm(-2, 2) (see `truncate_z`)."""
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ShapeMismatchError(
                f"latents z have shape {tuple(z.shape)}, expected [batch, {self.z_dim}]; "
                f"draw z with z_dim={self.z_dim}"
            )
        return truncate_z(z, self.truncation_psi)

    def truncation_coefficients(self) -> torch.Tensor:
        """Ones [L]: truncation already happened in `map`."""
        return torch.ones(self.num_layers, device=self.embeddings.weight.device)

    def average_w(self) -> torch.Tensor:
        """Zeros [Z]: the truncated normal is centred on zero."""
        return torch.zeros(self.z_dim, device=self.embeddings.weight.device)

    def class_embedding(self) -> torch.Tensor:
        """one_hot(class_index) @ embeddings.weight.T, shape [Z]."""
        return self.embeddings.weight[:, self.class_index]

    def layer_code_weights(self) -> list[torch.Tensor]:
        """For SeFa, per conditioned layer l, the raw weights that read code l: [out_l, Z].

        Layer 0: gen_z's columns for z; layer 1 + j: GenBlock j's conditional-BN scale and
        offset projections (bn_0 .. bn_3), their z columns concatenated along out.
        """
        z_dim = self.z_dim
        weights = [self.generator.gen_z.weight_orig[:, :z_dim]]
        for block in self.generator.layers:
            if isinstance(block, GenBlock):
                parts = []
                for i in range(4):
                    bn = getattr(block, f"bn_{i}")
                    parts += [bn.scale.weight_orig[:, :z_dim], bn.offset.weight_orig[:, :z_dim]]
                weights.append(torch.cat(parts))
        return weights

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """wp [B, L, Z] (one z copy per conditioned layer) -> images [B, 3, R, R]."""
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.z_dim):
            raise ShapeMismatchError(
                f"codes wp have shape {tuple(wp.shape)}, expected "
                f"[batch, {self.num_layers}, {self.z_dim}] for this BigGAN; check that the "
                f"codes come from the same model"
            )
        return run_stages(self.synthesis_stages(), (), wp)  # [B, 3, R, R]

    def synthesis_stages(self) -> list[Stage]:
        """`synthesize` as stages (`rescore.models.stages`), for generator-prefix reuse: layer l's
        conditioning vector is [wp[:, l], class embedding]."""

        def condition(wp: torch.Tensor, layer: int) -> torch.Tensor:
            embed = self.class_embedding().expand(wp.shape[0], -1)  # [B, Z]
            return torch.cat([wp[:, layer], embed], dim=1)  # [B, 2Z]

        return self.generator.stages(condition)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, 3, R, R]."""
        w = self.map(z)
        return self.synthesize(w.unsqueeze(1).expand(-1, self.num_layers, -1))


def _files(path: Path) -> tuple[Path, Path]:
    """(weights, config) of a checkpoint directory or of a .bin with config.json beside it."""
    if path.is_dir():
        weights, config = path / WEIGHTS_NAME, path / CONFIG_NAME
    else:
        weights, config = path, path.parent / CONFIG_NAME
    if not config.is_file():
        raise CheckpointError(
            f"{_WHAT} {path} has no {CONFIG_NAME} beside its weights; pass the directory "
            f"holding {WEIGHTS_NAME} and {CONFIG_NAME} (as pytorch-pretrained-BigGAN ships them)"
        )
    return weights, config


def read_config(path: Path) -> BigGANConfig:
    """Parse and validate a pytorch-pretrained-BigGAN config.json."""
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"BigGAN config {path} is not readable JSON ({error}); pass the config.json that "
            f"came with the weights"
        ) from error
    if not isinstance(values, dict):
        raise CheckpointError(f"BigGAN config {path} is not a JSON object; pass its config.json")
    return BigGANConfig.from_dict(values, path=path)


def load_biggan(
    path: Path | str, *, class_index: int | None, truncation_psi: float | None = None
) -> BigGANGenerator:
    """Load a pytorch-pretrained-BigGAN checkpoint (directory, or .bin beside config.json).

    The weights must fit the config exactly (strict keys and shapes). Raises `RescoreError`
    without `class_index` and `CheckpointError` for missing, corrupt, unsafe or mismatched files.
    """
    path = Path(path)
    if class_index is None:
        raise RescoreError(
            "BigGAN is class-conditional and needs a class; pass --class-index N "
            "(an ImageNet class, e.g. 207 for golden retriever)"
        )
    weights, config_path = _files(path)
    config = read_config(config_path)
    state_dict = as_state_dict(read_checkpoint(weights, what=_WHAT), path=weights, what=_WHAT)
    psi = DEFAULT_TRUNCATION if truncation_psi is None else truncation_psi
    with torch.random.fork_rng(devices=[]):  # the throw-away random init leaves the caller's RNG
        model = BigGANGenerator(config, class_index=class_index, truncation_psi=psi)
    if "generator.gen_z.weight_orig" not in state_dict:
        family = guess_family(state_dict)
        looks_like = f"; it looks like a {family} checkpoint" if family else ""
        raise CheckpointError(
            f"{weights} is not a pytorch-pretrained-BigGAN state dict (no "
            f"'generator.gen_z.weight_orig'{looks_like}); pass the port's {WEIGHTS_NAME}"
        )
    load_strict(model, state_dict, path=weights, what=_WHAT)
    return model.float().eval()


def _power_iterations(layer: SpectralNormed, *, steps: int, eps: float) -> None:
    """Move `weight_u`, `weight_v` towards the top singular vectors of weight_orig (in place)."""
    matrix = layer.weight_orig.detach().flatten(1)  # [out, in * k * k]
    u = layer.weight_u
    for _ in range(steps):
        v = F.normalize(torch.mv(matrix.T, u), dim=0, eps=eps)
        u = F.normalize(torch.mv(matrix, v), dim=0, eps=eps)
    layer.weight_u.copy_(u)
    layer.weight_v.copy_(v)


def save_random_biggan(directory: Path | str, config: BigGANConfig, *, seed: int = 0) -> Path:
    """Write a seeded random checkpoint directory (config.json + pytorch_model.bin); returns it.

    For tests and benchmarks (no pretrained weights can be downloaded): weights and u, v N(0, 1),
    biases N(0, 0.1^2), running means N(0, 0.1^2), running variances U(0.5, 1.5), gamma 0.5;
    then u, v converged by power iteration (as the port's converter prepares them), so each
    normalised weight has spectral norm about 1, as in trained files.
    """
    with torch.random.fork_rng(devices=[]):
        model = BigGANGenerator(config, class_index=0)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            values = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_vars"):
                values = 0.5 + torch.rand(tensor.shape, generator=generator)
            elif name.endswith(("bias", "running_means")):
                values = values * 0.1
            elif name.endswith("gamma"):
                values = torch.full(tensor.shape, 0.5)
            tensor.copy_(values)
        for module in model.modules():
            if isinstance(module, SpectralNormed):
                _power_iterations(module, steps=10, eps=config.eps)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    values = {**config.__dict__, "layers": [list(layer) for layer in config.layers]}
    (directory / CONFIG_NAME).write_text(json.dumps(values, indent=2), encoding="utf-8")
    torch.save(model.state_dict(), directory / WEIGHTS_NAME)
    return directory
