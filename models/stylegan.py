"""StyleGAN (v1) generator in the layout of the genforce/HiGAN PyTorch checkpoints.

The network HiGAN studies: z -> pixel norm -> 8 equalized-lr dense layers -> w; truncation towards
`w_avg` on the first layers gives the layer-wise codes wp; synthesis starts from a learned 4x4
constant and runs two style-modulated convolutions per resolution, each followed by the same
epilogue (noise, bias, leaky ReLU, instance norm, style modulation), with a ToRGB per resolution.

Numerics follow genforce's `stylegan_generator_network.py` (same operation order, same scales);
parameter names and shapes follow the published files (`stylegan_bedroom256_generator.pth`, ...),
which load with strict=True. Noise is always the stored per-layer buffer (HiGAN's
`randomize_noise=False`), so images are a deterministic function of wp.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from . import stylegan_layers as ops
from .base import truncate
from .checkpoints import as_state_dict, load_strict, read_checkpoint
from .errors import CheckpointError, ShapeMismatchError
from .stages import Stage, State, run_stages
from .stylegan_layers import ParameterHolder, TruncationBuffers, check_latents

_RESOLUTIONS_ALLOWED = (8, 16, 32, 64, 128, 256, 512, 1024)
_INIT_RES = 4
_FUSED_SCALE_OPTIONS_ALLOWED = (True, False, "auto")
# With fused_scale='auto', blocks at this resolution and above upsample with a transposed conv.
_AUTO_FUSED_SCALE_MIN_RES = 128
_LRELU_SLOPE = 0.2
_NORM_EPS = 1e-8
_MAPPING_LR_MUL = 0.01
_WHAT = "StyleGAN generator checkpoint"
# genforce/HiGAN delete these before torch.save and rebuild them from the model settings on load.
_MODEL_SPECIFIC_VARS = ("truncation.truncation",)
_SYNTHESIS_LAYER = re.compile(r"synthesis\.layer(\d+)\.")


class EqualizedDense(nn.Module):
    """Dense layer with equalized learning rate, as stored by genforce (`fc.weight`, `wscale.bias`).

    y = x @ (W * gain / sqrt(in_dim) * lr_mul).T + b * lr_mul, then leaky ReLU 0.2 if `lrelu`.
    x [B, in_dim] -> y [B, out_dim].
    """

    def __init__(self, in_dim: int, out_dim: int, *, gain: float, lr_mul: float, lrelu: bool):
        super().__init__()
        self.fc = ParameterHolder("weight", torch.randn(out_dim, in_dim))  # [out, in]
        self.wscale = ParameterHolder("bias", torch.zeros(out_dim))  # [out]
        self.scale = gain / math.sqrt(in_dim) * lr_mul
        self.lr_mul = lr_mul
        self.lrelu = lrelu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = ops.equalized_linear(
            x, self.fc.weight, self.wscale.bias, weight_gain=self.scale, bias_gain=self.lr_mul
        )  # [B, out]
        return F.leaky_relu(y, _LRELU_SLOPE) if self.lrelu else y


class MappingNetwork(nn.Module):
    """z [B, Z] -> w [B, D]: pixel norm, then `num_layers` dense layers (gain sqrt 2, lr_mul 0.01).

    Hidden width is `hidden_dim` (genforce uses fmaps_max for it).
    """

    def __init__(self, z_dim: int, hidden_dim: int, w_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        for i in range(num_layers):
            in_dim = z_dim if i == 0 else hidden_dim
            out_dim = w_dim if i == num_layers - 1 else hidden_dim
            dense = EqualizedDense(
                in_dim, out_dim, gain=math.sqrt(2.0), lr_mul=_MAPPING_LR_MUL, lrelu=True
            )
            self.add_module(f"dense{i}", dense)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        w = ops.pixel_norm(z, eps=_NORM_EPS)  # [B, Z]
        for i in range(self.num_layers):
            w = getattr(self, f"dense{i}")(w)  # [B, hidden] ... [B, D]
        return w


class NoiseInput(nn.Module):
    """Stored noise map `noise` [1, 1, R, R] scaled per channel by `weight` [C]."""

    def __init__(self, resolution: int, channels: int) -> None:
        super().__init__()
        self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
        self.weight = nn.Parameter(torch.zeros(channels))


class StyleModulation(nn.Module):
    """x * (s0 + 1) + s1 with [s0, s1] = dense(w) (gain 1, lr_mul 1, linear)."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.dense = EqualizedDense(w_dim, 2 * channels, gain=1.0, lr_mul=1.0, lrelu=False)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.dense(w).view(-1, 2, self.channels, 1, 1)  # [B, 2, C, 1, 1]
        return x * (style[:, 0] + 1) + style[:, 1]  # [B, C, H, W]


class Epilogue(nn.Module):
    """After every conv: + noise * weight, + bias, leaky ReLU, instance norm, style modulation."""

    def __init__(self, resolution: int, channels: int, w_dim: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.apply_noise = NoiseInput(resolution, channels)
        self.style_mod = StyleModulation(channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x [B or 1, C, R, R], w [B, D] -> [B, C, R, R]."""
        channel = (1, -1, 1, 1)
        offset = self.apply_noise.noise * self.apply_noise.weight.view(channel)  # [1, C, R, R]
        x = x + (offset + self.bias.view(channel))
        x = F.leaky_relu(x, _LRELU_SLOPE)
        x = x - torch.mean(x, dim=(2, 3), keepdim=True)
        x = x / torch.sqrt(torch.mean(x**2, dim=(2, 3), keepdim=True) + _NORM_EPS)
        return self.style_mod(x, w)


def _conv_scale(in_channels: int, kernel_size: int) -> float:
    """Equalized-lr scale of a conv with gain sqrt(2): sqrt(2) / sqrt(fan_in)."""
    return math.sqrt(2.0) / math.sqrt(in_channels * kernel_size * kernel_size)


class ConstBlock(nn.Module):
    """layer0: the learned constant `const` [1, C, 4, 4] through an epilogue."""

    def __init__(self, channels: int, w_dim: int) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.ones(1, channels, _INIT_RES, _INIT_RES))
        self.epilogue = Epilogue(_INIT_RES, channels, w_dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # The constant, noise and instance norm are the same for every sample, so they run once
        # at batch 1 and the style modulation broadcasts to the batch: w [B, D] -> [B, C, 4, 4].
        return self.epilogue(self.const, w)


class ConvBlock(nn.Module):
    """Second layer of a resolution: 3x3 conv (`conv.weight` [out, in, 3, 3]) and epilogue."""

    def __init__(self, resolution: int, in_channels: int, out_channels: int, w_dim: int) -> None:
        super().__init__()
        self.conv = ParameterHolder("weight", torch.randn(out_channels, in_channels, 3, 3))
        self.scale = _conv_scale(in_channels, 3)
        self.epilogue = Epilogue(resolution, out_channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = ops.equalized_conv2d(x, self.conv.weight, weight_gain=self.scale, padding=1)
        return self.epilogue(x, w)  # [B, out, R, R]


class Blur(nn.Module):
    """Depthwise 3x3 blur with the normalized [1, 2, 1] outer product (`kernel` [C, 1, 3, 3])."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        taps = torch.tensor([1.0, 2.0, 1.0])
        kernel = torch.outer(taps, taps) / 16.0  # [3, 3], sums to 1
        self.register_buffer("kernel", kernel.expand(channels, 1, 3, 3).clone())
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ops.fir_filter(x, self.kernel, padding=1)  # [B, C, R, R]


class UpBlock(nn.Module):
    """First layer of a resolution: x2 upsampling conv, blur, epilogue. [B, in, R/2] -> [B, out, R].

    Not fused: nearest x2 then 3x3 conv (`conv.weight` [out, in, 3, 3]). Fused: one transposed
    conv, stride 2, whose 4x4 kernel is the sum of the 4 shifted copies of the zero-padded 3x3
    `weight` [3, 3, in, out] (the layout the published files use for these blocks).
    """

    def __init__(
        self, resolution: int, in_channels: int, out_channels: int, w_dim: int, *, fused: bool
    ) -> None:
        super().__init__()
        self.fused = fused
        if fused:
            self.weight = nn.Parameter(torch.randn(3, 3, in_channels, out_channels))
        else:
            self.conv = ParameterHolder("weight", torch.randn(out_channels, in_channels, 3, 3))
        self.scale = _conv_scale(in_channels, 3)
        self.blur = Blur(out_channels)
        self.epilogue = Epilogue(resolution, out_channels, w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if self.fused:
            kernel = F.pad(self.weight * self.scale, (0, 0, 0, 0, 1, 1, 1, 1))  # [5, 5, in, out]
            kernel = kernel[1:, 1:] + kernel[:-1, 1:] + kernel[1:, :-1] + kernel[:-1, :-1]
            kernel = kernel.permute(2, 3, 0, 1)  # [in, out, 4, 4]
            x = F.conv_transpose2d(x, kernel, stride=2, padding=1)  # [B, out, R, R]
        else:
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")  # [B, in, R, R]
            x = ops.equalized_conv2d(x, self.conv.weight, weight_gain=self.scale, padding=1)
        return self.epilogue(self.blur(x), w)


class ToRGB(nn.Module):
    """1x1 conv to RGB (`conv.weight` [3, C, 1, 1], scale 1/sqrt(C)) plus `bias` [3]."""

    def __init__(self, in_channels: int, out_channels: int = 3) -> None:
        super().__init__()
        self.conv = ParameterHolder("weight", torch.randn(out_channels, in_channels, 1, 1))
        self.scale = 1.0 / math.sqrt(in_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        image = ops.equalized_conv2d(x, self.conv.weight, weight_gain=self.scale, padding=0)
        return image + self.bias.view(1, -1, 1, 1)


class SynthesisNetwork(nn.Module):
    """wp [B, L, D] -> images [B, 3, R, R]; blocks `layer{2b}`, `layer{2b+1}`, `output{b}`.

    `lod` (level of detail, from progressive training) skips the blocks whose
    res_log2 + lod > final_res_log2; the image of the last block that ran is nearest-upsampled to
    the full resolution instead. Its value is read once when weights are loaded (load_state_dict)
    and kept as a Python float, so forward needs no host round-trip.
    """

    def __init__(
        self,
        resolution: int,
        w_dim: int,
        *,
        fused_scale: bool | Literal["auto"],
        fmaps_base: int,
        fmaps_max: int,
        final_tanh: bool,
    ) -> None:
        super().__init__()
        self.final_res_log2 = int(math.log2(resolution))
        self.num_blocks = self.final_res_log2 - 1  # 4x4, 8x8, ..., resolution
        self.num_layers = 2 * self.num_blocks
        self.final_tanh = final_tanh
        self.lod = nn.Parameter(torch.zeros(()))
        self._lod = 0.0
        self._blocks_run = self.num_blocks

        def channels(res: int) -> int:
            return min(fmaps_base // res, fmaps_max)

        self._first: list[nn.Module] = []
        self._second: list[ConvBlock] = []
        self._to_rgb: list[ToRGB] = []
        for block in range(self.num_blocks):
            res = _INIT_RES * 2**block
            if block == 0:
                first: nn.Module = ConstBlock(channels(res), w_dim)
            else:
                fused = res >= _AUTO_FUSED_SCALE_MIN_RES if fused_scale == "auto" else fused_scale
                first = UpBlock(res, channels(res // 2), channels(res), w_dim, fused=bool(fused))
            second = ConvBlock(res, channels(res), channels(res), w_dim)
            to_rgb = ToRGB(channels(res))
            self.add_module(f"layer{2 * block}", first)
            self.add_module(f"layer{2 * block + 1}", second)
            self.add_module(f"output{block}", to_rgb)
            self._first.append(first)
            self._second.append(second)
            self._to_rgb.append(to_rgb)
        self.register_load_state_dict_post_hook(_cache_lod)

    @property
    def cached_lod(self) -> float:
        """The level of detail forward uses (the `lod` parameter as of the last load)."""
        return self._lod

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages(), (), wp)

    def stages(self) -> list[Stage]:
        """Synthesis as stages (forward runs them): one per code layer, then ToRGB.

        Layer 2b is block b's first layer (the constant or the upsampling conv), 2b+1 its second.
        Only the last block's ToRGB reaches the output (genforce computes and drops the others);
        blocks that `lod` skips are replaced by nearest upsampling of the image.
        """
        first, second, blocks = self._first, self._second, self._blocks_run

        def to_image(state: State, wp: torch.Tensor) -> State:
            image = self._to_rgb[blocks - 1](state[0])  # [B, 3, R, R]
            for _ in range(blocks, self.num_blocks):
                image = F.interpolate(image, scale_factor=2.0, mode="nearest")  # [B, 3, 2R, 2R]
            return (torch.tanh(image) if self.final_tanh else image,)

        # block 0 always runs (lod is validated)
        stages = [Stage((0,), lambda s, wp: (first[0](wp[:, 0]),))]  # [B, C, 4, 4]
        for b in range(blocks):
            if b > 0:
                stages.append(Stage((2 * b,), lambda s, wp, b=b: (first[b](s[0], wp[:, 2 * b]),)))
            stages.append(
                Stage((2 * b + 1,), lambda s, wp, b=b: (second[b](s[0], wp[:, 2 * b + 1]),))
            )
        return [*stages, Stage((), to_image)]


def _cache_lod(module: nn.Module, incompatible_keys: object) -> None:
    """Load post-hook of SynthesisNetwork: read `lod` once (host sync at load time, not forward)."""
    if module.lod.is_meta:
        return
    lod = float(module.lod.detach().cpu())
    if not 0.0 <= lod <= module.final_res_log2 - 2:
        raise CheckpointError(
            f"synthesis.lod is {lod}, outside [0, {module.final_res_log2 - 2}] for resolution "
            f"{2**module.final_res_log2}; the file does not belong to this resolution"
        )
    module._lod = lod
    # Block b (resolution 2**(b + 2)) runs when b + 2 + lod <= final_res_log2, as in genforce.
    module._blocks_run = sum(
        1 for block in range(module.num_blocks) if block + 2 + lod <= module.final_res_log2
    )


class StyleGANGenerator(nn.Module):
    """StyleGAN generator: z [B, Z] -> w [B, D] -> wp [B, L, D] -> images [B, 3, R, R] in [-1, 1].

    Implements the `rescore.models.base.Generator` protocol. L = 2 * log2(resolution) - 2.
    Hyper-parameters keep genforce's names; defaults are those of the published checkpoints.
    `truncation_psi` / `truncation_layers` set the `truncation.truncation` buffer.
    """

    def __init__(
        self,
        resolution: int,
        *,
        z_space_dim: int = 512,
        w_space_dim: int = 512,
        num_mapping_layers: int = 8,
        fused_scale: bool | Literal["auto"] = "auto",
        fmaps_base: int = 16 << 10,
        fmaps_max: int = 512,
        final_tanh: bool = False,
        truncation_psi: float = 0.7,
        truncation_layers: int = 8,
    ) -> None:
        super().__init__()
        if resolution not in _RESOLUTIONS_ALLOWED:
            raise ValueError(
                f"StyleGAN resolution {resolution} is not supported; "
                f"use one of {list(_RESOLUTIONS_ALLOWED)}"
            )
        if not (isinstance(fused_scale, bool) or fused_scale == "auto"):
            raise ValueError(
                f"fused_scale {fused_scale!r} is not supported; "
                f"use one of {list(_FUSED_SCALE_OPTIONS_ALLOWED)}"
            )
        self.resolution = resolution
        self.z_dim = z_space_dim
        self.w_dim = w_space_dim
        self.num_layers = 2 * int(math.log2(resolution)) - 2
        self.mapping = MappingNetwork(z_space_dim, fmaps_max, w_space_dim, num_mapping_layers)
        self.truncation = TruncationBuffers(
            self.num_layers, w_space_dim, truncation_psi, truncation_layers
        )
        self.synthesis = SynthesisNetwork(
            resolution,
            w_space_dim,
            fused_scale=fused_scale,
            fmaps_base=fmaps_base,
            fmaps_max=fmaps_max,
            final_tanh=final_tanh,
        )

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: z [B, Z] -> w [B, D] (no truncation)."""
        check_latents(z, self.z_dim)
        return self.mapping(z)

    def truncation_coefficients(self) -> torch.Tensor:
        """Per-layer truncation coefficient psi_l, shape [L]."""
        return self.truncation.coefficients()

    def average_w(self) -> torch.Tensor:
        """The w_avg used for truncation, shape [D]."""
        return self.truncation.w_avg

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """Synthesis: wp [B, L, D] (already truncated) -> images [B, 3, R, R]."""
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ShapeMismatchError(
                f"codes wp have shape {tuple(wp.shape)}, expected "
                f"[batch, {self.num_layers}, {self.w_dim}] for this {self.resolution}px StyleGAN; "
                f"check that the codes come from the same model"
            )
        return self.synthesis(wp)

    def synthesis_stages(self) -> list[Stage]:
        """`synthesize` as stages (`rescore.models.stages`), for generator-prefix reuse."""
        return self.synthesis.stages()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, 3, R, R], with the model's truncation."""
        wp = truncate(self.map(z), self.average_w(), self.truncation_coefficients())  # [B, L, D]
        return self.synthesize(wp)

    def layer_code_weights(self) -> list[torch.Tensor]:
        """Per code entry l, the raw style affine weight [2C_l, D] that consumes wp[:, l] (SeFa)."""
        layers = [getattr(self.synthesis, f"layer{i}") for i in range(self.num_layers)]
        return [layer.epilogue.style_mod.dense.fc.weight for layer in layers]

    def features(self, wp: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Feature maps after the epilogue of each layer in `layers` (LinearGAN):
        wp [B, L, D] -> [B, C_l, R_l, R_l] per layer; synthesis stops after the deepest one."""
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.w_dim) or not layers:
            raise ShapeMismatchError(
                f"features need wp [B, {self.num_layers}, {self.w_dim}] and at least one layer; "
                f"got wp {tuple(wp.shape)} and layers {list(layers)}"
            )
        if min(layers) < 0 or max(layers) >= self.num_layers:
            raise ShapeMismatchError(
                f"feature layers {list(layers)} are outside 0..{self.num_layers - 1}; "
                f"pick layers of this {self.resolution}px StyleGAN"
            )
        synthesis, found = self.synthesis, {}
        x = None
        for layer in range(max(layers) + 1):
            block, second = divmod(layer, 2)
            module = (synthesis._second if second else synthesis._first)[block]
            x = module(wp[:, 0]) if layer == 0 else module(x, wp[:, layer])
            found[layer] = x
        return [found[layer] for layer in layers]


def _resolution_in_file(state_dict: dict[str, torch.Tensor], path: Path) -> int:
    """Resolution of a StyleGAN v1 state dict, from its synthesis layers (never from buffers).

    genforce's converter deletes `truncation.truncation` before saving (its loader rebuilds it from
    the model settings), so published files lack it; a file that holds it must agree with its
    synthesis weights.
    """
    if "synthesis.layer0.const" not in state_dict or "mapping.dense0.wscale.bias" not in state_dict:
        raise CheckpointError(
            f"{path} is not a StyleGAN (v1) generator checkpoint (no 'synthesis.layer0.const' or "
            f"'mapping.dense0.wscale.bias'); pass a file like stylegan_bedroom256_generator.pth"
        )
    indices = [int(m.group(1)) for k in state_dict if (m := _SYNTHESIS_LAYER.match(k))]
    num_layers = max(indices) + 1
    resolution = 2 ** ((num_layers + 2) // 2)
    if num_layers % 2 or resolution not in _RESOLUTIONS_ALLOWED:
        raise CheckpointError(
            f"{_WHAT} {path} has {num_layers} synthesis layers, which matches no supported "
            f"resolution {list(_RESOLUTIONS_ALLOWED)}; pass an unmodified published file"
        )
    coefficients = state_dict.get("truncation.truncation")
    if coefficients is not None and tuple(coefficients.shape) != (1, num_layers, 1):
        raise CheckpointError(
            f"{_WHAT} {path} holds truncation.truncation of shape {tuple(coefficients.shape)} "
            f"but its synthesis weights have {num_layers} layers ({resolution}px, expected "
            f"(1, {num_layers}, 1)); the file is inconsistent: drop that buffer or pass an "
            f"unmodified published file"
        )
    return resolution


def load_stylegan(
    path: Path | str, *, truncation_psi: float = 0.7, truncation_layers: int = 8
) -> StyleGANGenerator:
    """Load a genforce/HiGAN StyleGAN checkpoint (plain state dict) into an eval-mode float32 model.

    The resolution is read from the synthesis weights. Truncation follows the arguments: the
    published files hold no `truncation.truncation` (genforce's converter deletes it), and one
    that a file does hold is ignored, as HiGAN's loader does. Raises `CheckpointError` for a
    missing, corrupt, unsafe or non-StyleGAN file and lists missing, unexpected and mis-shaped keys.
    """
    path = Path(path)
    state_dict = as_state_dict(read_checkpoint(path, what=_WHAT), path=path, what=_WHAT)
    resolution = _resolution_in_file(state_dict, path)
    with torch.random.fork_rng(devices=[]):  # the throw-away random init leaves the caller's RNG
        model = StyleGANGenerator(
            resolution, truncation_psi=truncation_psi, truncation_layers=truncation_layers
        )
    load_strict(model, state_dict, path=path, what=_WHAT, keep=_MODEL_SPECIFIC_VARS)
    return model.float().eval()


def save_random_stylegan(path: Path | str, *, resolution: int, seed: int = 0) -> Path:
    """Write a seeded random StyleGAN checkpoint in the published layout; returns the path.

    For tests and benchmarks (no pretrained weights can be downloaded). Scales follow the
    equalized-lr convention, so every layer sees unit-scale inputs: weights, constant, noise maps
    and w_avg N(0, 1), biases and noise strengths N(0, 0.1^2), except that mapping weights and
    biases are stored 1/lr_mul (100x) larger, as trained files hold them (the layer multiplies
    them by lr_mul). lod 0; blur kernels and truncation coefficients as constructed.
    """
    with torch.random.fork_rng(devices=[]):
        model = StyleGANGenerator(resolution)
    generator = torch.Generator().manual_seed(seed)
    kept = ("synthesis.lod", *_MODEL_SPECIFIC_VARS)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name in kept or name.endswith("blur.kernel"):
                continue
            values = torch.randn(tensor.shape, generator=generator)
            if name.endswith("bias") or name.endswith("apply_noise.weight"):
                values = values * 0.1
            if name.startswith("mapping."):
                values = values / _MAPPING_LR_MUL
            tensor.copy_(values)
    state_dict = {k: v for k, v in model.state_dict().items() if k not in _MODEL_SPECIFIC_VARS}
    path = Path(path)
    torch.save(state_dict, path)
    return path
