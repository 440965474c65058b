"""StyleGAN2 generator, in the layout of the genforce/HiGAN checkpoints and of NVlabs pickles.

z -> pixel norm -> equalized-lr dense layers -> w; truncation towards `w_avg` gives the layer-wise
codes wp; synthesis starts from a learned 4x4 constant and runs, per resolution, two modulated
convolutions with weight demodulation (the first upsamples x2 with a [1, 3, 3, 1] FIR filter),
stored noise and a leaky ReLU; a modulated 1x1 ToRGB per resolution, whose outputs are summed
with the FIR-upsampled image of the resolution below ('skip' architecture; 'resnet' and 'origin'
take only the last ToRGB).

Parameter names and shapes are those of genforce/HiGAN's `stylegan2_generator_network.py`
(`stylegan2_church256_generator.pth`, loaded with strict=True); numerics follow it. NVlabs
`stylegan2-ada-pytorch` generators (`networks.Generator`, read from their pickles by
`rescore.models.nvlabs_pickle`) load into the same module: `from_nvlabs` renames and transposes
their state dict into this layout, and the config carries the three places where the two
implementations differ (where the +1 of the style bias lives, whether demodulated convolutions
scale their weights first, NVlabs' `conv_clamp`). Noise is always the stored buffer (genforce's
`randomize_noise=False`, NVlabs' `noise_mode='const'`), so images are a function of wp.

Layer-wise codes: L = 2 log2(R) - 2. Conv layer i reads code i; the ToRGB of block b reads code
2b + 1 (it shares it with the next block's first conv).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from . import stylegan_layers as ops
from .base import truncate
from .checkpoints import as_state_dict, load_strict, read_checkpoint
from .errors import CheckpointError, RescoreError, ShapeMismatchError
from .stages import Stage, State, run_stages
from .stylegan_layers import ParameterHolder, TruncationBuffers, check_latents

_RESOLUTIONS_ALLOWED = (8, 16, 32, 64, 128, 256, 512, 1024)
_ARCHITECTURES_ALLOWED = ("skip", "resnet", "origin")
_INIT_RES = 4
_WHAT = "StyleGAN2 generator checkpoint"
# genforce/HiGAN's StyleGAN2 defaults (model_settings.py): psi 0.5 on the first 18 layers.
DEFAULT_TRUNCATION_PSI = 0.5
DEFAULT_TRUNCATION_LAYERS = 18
_FIR_TAPS = (1.0, 3.0, 3.0, 1.0)


@dataclass(frozen=True)
class StyleGAN2Config:
    """Hyper-parameters of a StyleGAN2 generator (read from the weights by the loaders).

    mapping_features: widths along the mapping network, [in, hidden..., w_dim] (in = z_dim, plus
    embed_features for a conditional model). channels: feature maps per block, 4x4 first.
    style_bias_offset: added to the style affine at run time (genforce 1.0; NVlabs stores it in
    the bias, 0.0). scale_demodulated: whether demodulated convs scale weights by 1/sqrt(fan_in)
    first (genforce yes; NVlabs no: demodulation cancels it up to eps). conv_clamp: NVlabs'
    activation clamp (None: off).
    """

    resolution: int
    z_dim: int
    w_dim: int
    mapping_features: tuple[int, ...]
    channels: tuple[int, ...]
    c_dim: int = 0
    embed_features: int = 0
    mapping_lr_mul: float = 0.01
    architecture: Literal["skip", "resnet", "origin"] = "skip"
    image_channels: int = 3
    use_noise: bool = True
    style_bias_offset: float = 1.0
    scale_demodulated: bool = True
    conv_clamp: float | None = None

    @property
    def num_layers(self) -> int:
        """Number of layer-wise codes L."""
        return 2 * int(math.log2(self.resolution)) - 2


def default_channels(resolution: int, fmaps_base: int = 32 << 10, fmaps_max: int = 512) -> tuple:
    """Feature maps per block (4x4 first): min(fmaps_base // res, fmaps_max)."""
    count = int(math.log2(resolution)) - 1
    return tuple(min(fmaps_base // (_INIT_RES * 2**b), fmaps_max) for b in range(count))


class DenseLayer(nn.Module):
    """genforce's dense block: `fc.weight` [out, in], `bias` [out]; equalized lr, optional lrelu.

    y = act(x @ (W / sqrt(in) * lr_mul).T + b * lr_mul + bias_offset) (lrelu gain sqrt 2).
    """

    def __init__(
        self, in_dim: int, out_dim: int, *, lr_mul: float, lrelu: bool, bias_offset: float = 0.0
    ) -> None:
        super().__init__()
        self.fc = ParameterHolder("weight", torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.weight_gain = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.bias_offset = bias_offset
        self.activation: ops.Activation = "lrelu" if lrelu else "linear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = ops.equalized_linear(
            x, self.fc.weight, self.bias, weight_gain=self.weight_gain, bias_gain=self.lr_mul
        )  # [B, out]
        if self.bias_offset:
            y = y + self.bias_offset
        return ops.bias_act(y, activation=self.activation)


class MappingNetwork(nn.Module):
    """z [B, Z] -> w [B, D]: pixel norm, dense layers `dense{i}` (lrelu, lr_mul 0.01).

    Conditional models (NVlabs c_dim > 0) also hold `embed` (dense, linear, lr_mul 1) whose
    pixel-normed output for the fixed class one-hot `class_onehot` [1, C] is appended to z.
    """

    def __init__(self, config: StyleGAN2Config, class_index: int | None = None) -> None:
        super().__init__()
        features = config.mapping_features
        self.num_layers = len(features) - 1
        for i in range(self.num_layers):
            dense = DenseLayer(
                features[i], features[i + 1], lr_mul=config.mapping_lr_mul, lrelu=True
            )
            self.add_module(f"dense{i}", dense)
        self.embed: DenseLayer | None = None
        if config.c_dim > 0:
            if class_index is None or not 0 <= class_index < config.c_dim:
                raise RescoreError(
                    f"this StyleGAN2 generator is conditional on {config.c_dim} classes and "
                    f"needs a class (got {class_index}); pass --class-index N with "
                    f"0 <= N < {config.c_dim}"
                )
            self.embed = DenseLayer(config.c_dim, config.embed_features, lr_mul=1.0, lrelu=False)
            onehot = torch.zeros(1, config.c_dim)
            onehot[0, class_index] = 1.0
            self.register_buffer("class_onehot", onehot, persistent=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = ops.pixel_norm(z)  # [B, Z]
        if self.embed is not None:
            y = ops.pixel_norm(self.embed(self.class_onehot))  # [1, E]
            x = torch.cat([x, y.expand(x.shape[0], -1)], dim=1)  # [B, Z + E]
        for i in range(self.num_layers):
            x = getattr(self, f"dense{i}")(x)
        return x  # [B, D]


class FilterKernel(nn.Module):
    """Holds the 4x4 FIR kernel `kernel` [1, 1, 4, 4] (gain 4 included), as genforce stores it."""

    def __init__(self) -> None:
        super().__init__()
        taps = torch.tensor(_FIR_TAPS)
        kernel = torch.outer(taps, taps)
        self.register_buffer("kernel", (kernel / kernel.sum() * 4.0).view(1, 1, 4, 4))

    def matrix(self) -> torch.Tensor:
        """The kernel as [4, 4]."""
        return self.kernel[0, 0]


class ModulatedConvLayer(nn.Module):
    """One modulated convolution (genforce `layer{i}` / `output{k}`).

    Stored: `weight` [k, k, in, out], `bias` [out], `style.fc.weight` [in, D], `style.bias` [in];
    with noise `noise` [1, 1, R, R] and `noise_strength` []; upsampling layers `filter.kernel`.
    x [B, in, R', R'], w [B, D] -> act(modconv(x) + noise + bias) [B, out, R, R].
    """

    def __init__(
        self,
        config: StyleGAN2Config,
        resolution: int,
        in_channels: int,
        out_channels: int,
        *,
        kernel_size: int = 3,
        up: bool = False,
        to_rgb: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(kernel_size, kernel_size, in_channels, out_channels))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.style = DenseLayer(
            config.w_dim, in_channels, lr_mul=1.0, lrelu=False, bias_offset=config.style_bias_offset
        )
        self.demodulate = not to_rgb
        self.activation: ops.Activation = "linear" if to_rgb else "lrelu"
        scaled = to_rgb or config.scale_demodulated
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2) if scaled else 1.0
        self.clamp = config.conv_clamp
        self.filter = FilterKernel() if up else None
        self.has_noise = config.use_noise and not to_rgb
        if self.has_noise:
            self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor, w: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        weight = self.weight.permute(3, 2, 0, 1) * self.weight_gain  # [out, in, k, k]
        styles = self.style(w)  # [B, in]
        up_kernel = None if self.filter is None else self.filter.matrix()
        x = ops.modulated_conv2d(
            x, weight, styles, demodulate=self.demodulate, up_kernel=up_kernel
        )  # [B, out, R, R]
        if self.has_noise:
            x = ops.add_noise(x, self.noise, self.noise_strength)
        act_gain = (ops.LRELU_GAIN if self.activation == "lrelu" else 1.0) * gain
        clamp = None if self.clamp is None else self.clamp * gain
        return ops.bias_act(x, self.bias, activation=self.activation, gain=act_gain, clamp=clamp)


class SkipLayer(nn.Module):
    """'resnet' shortcut: x2 upsampling 1x1 conv (`weight` [1, 1, in, out], `filter.kernel`)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, 1, in_channels, out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)
        self.filter = FilterKernel()

    def forward(self, x: torch.Tensor, gain: float) -> torch.Tensor:
        weight = self.weight.permute(3, 2, 0, 1) * self.weight_gain  # [out, in, 1, 1]
        return ops.conv_transpose_up2(x, weight, self.filter.matrix()) * gain  # [B, out, 2R, 2R]


class InputConst(nn.Module):
    """The learned constant `const` [1, C, 4, 4]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, channels, _INIT_RES, _INIT_RES))


class SynthesisNetwork(nn.Module):
    """wp [B, L, D] -> images [B, C_img, R, R].

    Modules: `early_layer`, `layer{i}` (i < L - 1), `output{b}` (every block for 'skip', the last
    otherwise), `skip_layer{b-1}` ('resnet'), `upsample` ('skip': the RGB upsampling kernel).
    """

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.architecture = config.architecture
        self.num_blocks = len(config.channels)
        channels = config.channels
        self.early_layer = InputConst(channels[0])
        self._convs: list[ModulatedConvLayer] = []
        self._outputs: dict[int, ModulatedConvLayer] = {}
        self._skips: dict[int, SkipLayer] = {}
        for block in range(self.num_blocks):
            res = _INIT_RES * 2**block
            if block > 0:
                up = ModulatedConvLayer(config, res, channels[block - 1], channels[block], up=True)
                self.add_module(f"layer{2 * block - 1}", up)
                self._convs.append(up)
                if self.architecture == "resnet":
                    skip = SkipLayer(channels[block - 1], channels[block])
                    self.add_module(f"skip_layer{block - 1}", skip)
                    self._skips[block] = skip
            conv = ModulatedConvLayer(config, res, channels[block], channels[block])
            self.add_module(f"layer{2 * block}", conv)
            self._convs.append(conv)
            if self.architecture == "skip" or block == self.num_blocks - 1:
                rgb = ModulatedConvLayer(
                    config, res, channels[block], config.image_channels, kernel_size=1, to_rgb=True
                )
                self.add_module(f"output{block}", rgb)
                self._outputs[block] = rgb
        self.upsample = FilterKernel() if self.architecture == "skip" else None

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        return run_stages(self.stages(), (), wp)

    def stages(self) -> list[Stage]:
        """Synthesis as stages (forward runs them), one per code layer.

        Code 0 feeds block 0's conv; code 2b (b > 0) block b's second conv; code 2b + 1 block b's
        ToRGB ('skip': every block, else the last) and block b+1's upsampling conv. States:
        (x,), plus the image so far ('skip') or the residual branch ('resnet', after an
        upsampling conv); the last stage returns (image,).
        """
        convs, outputs, skips = self._convs, self._outputs, self._skips
        resnet, last = self.architecture == "resnet", self.num_blocks - 1
        half = math.sqrt(0.5)

        def start(state: State, wp: torch.Tensor) -> State:
            x = self.early_layer.const.expand(wp.shape[0], -1, -1, -1)  # [B, C, 4, 4]
            return (convs[0](x, wp[:, 0]),)

        def second_conv(state: State, wp: torch.Tensor, b: int) -> State:
            if resnet:
                x, residual = state
                return (residual + convs[2 * b](x, wp[:, 2 * b], gain=half),)
            x, *image = state
            return (convs[2 * b](x, wp[:, 2 * b]), *image)

        def output_then_up(state: State, wp: torch.Tensor, b: int) -> State:
            x, *carried = state
            image = carried[0] if carried else None  # 'skip' carries the image so far
            code = wp[:, 2 * b + 1]
            if b in outputs:
                rgb = outputs[b](x, code)  # [B, 3, R, R]
                if image is not None and self.upsample is not None:
                    rgb = rgb + ops.upsample2d(image, self.upsample.matrix())
                image = rgb
            if b == last:
                return (image,)
            residual = (skips[b + 1](x, gain=half),) if resnet else ()  # [B, C', 2R, 2R]
            x = convs[2 * b + 1](x, code)  # [B, C', 2R, 2R]
            return (x, *residual) if resnet or image is None else (x, image)

        stages = [Stage((0,), start)]
        for b in range(self.num_blocks):
            if b > 0:
                stages.append(Stage((2 * b,), lambda s, wp, b=b: second_conv(s, wp, b)))
            stages.append(Stage((2 * b + 1,), lambda s, wp, b=b: output_then_up(s, wp, b)))
        return stages


class StyleGAN2Generator(nn.Module):
    """StyleGAN2: z [B, Z] -> w [B, D] -> wp [B, L, D] -> images [B, 3, R, R] in [-1, 1].

    Implements `rescore.models.base.Generator` (family "stylegan2", layer-wise codes W+).
    `truncation_psi` / `truncation_layers` set the `truncation.truncation` buffer [1, L, 1].
    `class_index`: the class of a conditional (c_dim > 0) model.
    """

    family = "stylegan2"
    layer_wise = True

    def __init__(
        self,
        config: StyleGAN2Config,
        *,
        truncation_psi: float = DEFAULT_TRUNCATION_PSI,
        truncation_layers: int = DEFAULT_TRUNCATION_LAYERS,
        class_index: int | None = None,
    ) -> None:
        super().__init__()
        if config.resolution not in _RESOLUTIONS_ALLOWED:
            raise ValueError(
                f"StyleGAN2 resolution {config.resolution} is not supported; "
                f"use one of {list(_RESOLUTIONS_ALLOWED)}"
            )
        if config.architecture not in _ARCHITECTURES_ALLOWED:
            raise ValueError(
                f"StyleGAN2 architecture {config.architecture!r} is not supported; "
                f"use one of {list(_ARCHITECTURES_ALLOWED)}"
            )
        self.config = config
        self.resolution = config.resolution
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.num_layers = config.num_layers
        self.mapping = MappingNetwork(config, class_index)
        self.truncation = TruncationBuffers(
            self.num_layers, config.w_dim, truncation_psi, truncation_layers
        )
        self.synthesis = SynthesisNetwork(config)

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

    def layer_code_weights(self) -> list[torch.Tensor]:
        """Per code l, the style-affine weights [out_l, D] that read it (convs, then ToRGB)."""
        synthesis = self.synthesis
        weights: list[list[torch.Tensor]] = [[] for _ in range(self.num_layers)]
        for index, conv in enumerate(synthesis._convs):
            weights[index].append(conv.style.fc.weight)
        for block, rgb in synthesis._outputs.items():
            weights[2 * block + 1].append(rgb.style.fc.weight)
        return [torch.cat(parts, dim=0) for parts in weights]

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """Synthesis: wp [B, L, D] (already truncated) -> images [B, 3, R, R]."""
        if wp.ndim != 3 or wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ShapeMismatchError(
                f"codes wp have shape {tuple(wp.shape)}, expected "
                f"[batch, {self.num_layers}, {self.w_dim}] for this {self.resolution}px StyleGAN2; "
                f"check that the codes come from the same model"
            )
        return self.synthesis(wp)

    def synthesis_stages(self) -> list[Stage]:
        """`synthesize` as stages (`rescore.models.stages`), for generator-prefix reuse."""
        return self.synthesis.stages()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, 3, R, R], with the model's truncation."""
        wp = truncate(self.map(z), self.average_w(), self.truncation_coefficients())
        return self.synthesize(wp)


# --- genforce/HiGAN .pth -----------------------------------------------------------------------


def is_genforce_stylegan2(state_dict: Mapping[str, Any]) -> bool:
    """Whether a state dict has the genforce StyleGAN2 layout (its distinctive keys)."""
    return "synthesis.early_layer.const" in state_dict and "mapping.dense0.fc.weight" in state_dict


def config_from_genforce(state_dict: Mapping[str, torch.Tensor], path: Path) -> StyleGAN2Config:
    """Read resolution, widths and architecture from a genforce StyleGAN2 state dict."""
    if not is_genforce_stylegan2(state_dict):
        raise CheckpointError(
            f"{path} is not a genforce StyleGAN2 generator checkpoint (no "
            f"'synthesis.early_layer.const' or 'mapping.dense0.fc.weight'); pass a file like "
            f"stylegan2_church256_generator.pth"
        )
    noise_resolutions = [
        v.shape[-1]
        for k, v in state_dict.items()
        if k.startswith("synthesis.layer") and k.endswith(".noise")
    ]
    num_conv = sum(1 for k in state_dict if re.fullmatch(r"synthesis\.layer\d+\.weight", k))
    resolution = 2 ** ((num_conv + 3) // 2)
    if (
        num_conv % 2 == 0
        or resolution not in _RESOLUTIONS_ALLOWED
        or (noise_resolutions and max(noise_resolutions) != resolution)
    ):
        raise CheckpointError(
            f"{_WHAT} {path} has {num_conv} synthesis conv layers, which matches no supported "
            f"resolution {list(_RESOLUTIONS_ALLOWED)}; pass an unmodified published file"
        )
    num_mapping = sum(
        1 for k in state_dict if k.startswith("mapping.dense") and k.endswith("fc.weight")
    )
    dense = [state_dict[f"mapping.dense{i}.fc.weight"] for i in range(num_mapping)]
    channels = tuple(
        state_dict[f"synthesis.layer{2 * b}.weight"].shape[-1] for b in range((num_conv + 1) // 2)
    )
    if "synthesis.skip_layer0.weight" in state_dict:
        architecture = "resnet"
    elif "synthesis.upsample.kernel" in state_dict:
        architecture = "skip"
    else:
        architecture = "origin"
    return StyleGAN2Config(
        resolution=resolution,
        z_dim=dense[0].shape[1],
        w_dim=dense[-1].shape[0],
        mapping_features=(dense[0].shape[1], *(d.shape[0] for d in dense)),
        channels=channels,
        architecture=architecture,
        image_channels=state_dict[f"synthesis.output{len(channels) - 1}.bias"].shape[0],
        use_noise="synthesis.layer0.noise" in state_dict,
    )


def load_stylegan2(
    path: Path | str,
    *,
    truncation_psi: float = DEFAULT_TRUNCATION_PSI,
    truncation_layers: int = DEFAULT_TRUNCATION_LAYERS,
) -> StyleGAN2Generator:
    """Load a genforce/HiGAN StyleGAN2 checkpoint (plain state dict) into an eval float32 model.

    Resolution, widths and architecture are read from the file; `truncation.truncation` may be
    absent (genforce's converter deletes it) and follows the arguments either way.
    """
    path = Path(path)
    state_dict = as_state_dict(read_checkpoint(path, what=_WHAT), path=path, what=_WHAT)
    config = config_from_genforce(state_dict, path)
    with torch.random.fork_rng(devices=[]):
        model = StyleGAN2Generator(
            config, truncation_psi=truncation_psi, truncation_layers=truncation_layers
        )
    state_dict = dict(state_dict)
    state_dict.setdefault("truncation.truncation", model.truncation.truncation)
    load_strict(model, state_dict, path=path, what=_WHAT, keep=("truncation.truncation",))
    return model.float().eval()


def save_random_stylegan2(
    path: Path | str, config: StyleGAN2Config | None = None, *, resolution: int = 32, seed: int = 0
) -> Path:
    """Write a seeded random genforce StyleGAN2 checkpoint (no `truncation.truncation`).

    For tests and benchmarks. Weights, constant, noise maps and w_avg N(0, 1); biases, style
    biases and noise strengths N(0, 0.1^2); mapping weights and biases 1/lr_mul larger, as trained
    files hold them. Filter kernels as constructed. `config` defaults to the published widths.
    """
    if config is None:
        channels = default_channels(resolution)
        config = StyleGAN2Config(resolution, 512, 512, (512,) * 9, channels)
    with torch.random.fork_rng(devices=[]):
        model = StyleGAN2Generator(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict(keep_vars=True).items():
            if name.endswith("kernel") or name == "truncation.truncation":
                continue
            values = torch.randn(tensor.shape, generator=generator)
            if name.endswith("bias") or name.endswith("noise_strength"):
                values = values * 0.1
            if name.startswith("mapping."):
                values = values / config.mapping_lr_mul
            tensor.copy_(values)
    state = {k: v for k, v in model.state_dict().items() if k != "truncation.truncation"}
    path = Path(path)
    torch.save(state, path)
    return path


# --- NVlabs stylegan2-ada-pytorch ----------------------------------------------------------------


def from_nvlabs(
    init_kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor], options: Any
) -> StyleGAN2Generator:
    """Build a StyleGAN2 from an NVlabs `networks.Generator`'s init kwargs and state dict.

    `state_dict` has the NVlabs module's own keys (`mapping.fc0.weight`, `synthesis.b4.const`,
    ...); it is renamed and transposed into the genforce layout and loaded strictly. Truncation
    defaults to none (NVlabs' psi 1); `options` is a `GeneratorOptions` (class_index for c_dim > 0).
    """
    config = _config_from_nvlabs(init_kwargs, state_dict)
    psi = 1.0 if options.truncation_psi is None else options.truncation_psi
    layers = config.num_layers if options.truncation_layers is None else options.truncation_layers
    with torch.random.fork_rng(devices=[]):
        model = StyleGAN2Generator(
            config, truncation_psi=psi, truncation_layers=layers, class_index=options.class_index
        )
    converted = nvlabs_to_genforce(state_dict, config)
    converted["truncation.truncation"] = model.truncation.truncation
    load_strict(
        model,
        converted,
        path="(NVlabs pickle G_ema)",
        what="StyleGAN2 network",
        keep=("truncation.truncation",),
    )
    return model.float().eval()


def _config_from_nvlabs(
    init_kwargs: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]
) -> StyleGAN2Config:
    mapping_kwargs = dict(init_kwargs.get("mapping_kwargs") or {})
    synthesis_kwargs = dict(init_kwargs.get("synthesis_kwargs") or {})
    try:
        resolution = int(init_kwargs["img_resolution"])
        z_dim, w_dim = int(init_kwargs["z_dim"]), int(init_kwargs["w_dim"])
        c_dim = int(init_kwargs.get("c_dim", 0))
        image_channels = int(init_kwargs.get("img_channels", 3))
    except (KeyError, TypeError, ValueError) as error:
        raise CheckpointError(
            f"the NVlabs StyleGAN2 pickle's G_ema init kwargs lack {error}; "
            f"pass an unmodified stylegan2-ada-pytorch network pickle"
        ) from error
    if image_channels != 3:
        raise CheckpointError(
            f"the NVlabs StyleGAN2 generator paints {image_channels}-channel images; rescore's "
            f"predictors need RGB (img_channels=3)"
        )
    fc = sorted(k for k in state_dict if k.startswith("mapping.fc") and k.endswith(".weight"))
    mapping_weights = [state_dict[f"mapping.fc{i}.weight"] for i in range(len(fc))]
    if not mapping_weights or f"synthesis.b{resolution}.conv1.weight" not in state_dict:
        raise CheckpointError(
            f"the NVlabs StyleGAN2 G_ema state has no mapping.fc0 or synthesis.b{resolution} "
            f"(img_resolution {resolution}); pass an unmodified network pickle"
        )
    embed = state_dict.get("mapping.embed.weight")
    blocks = [
        f"synthesis.b{_INIT_RES * 2**b}.conv1.weight" for b in range(int(math.log2(resolution)) - 1)
    ]
    missing = [key for key in blocks if key not in state_dict]
    if missing:
        raise CheckpointError(
            f"the NVlabs StyleGAN2 G_ema state lacks {', '.join(missing[:4])} for "
            f"img_resolution {resolution}; pass an unmodified network pickle"
        )
    channels = tuple(state_dict[key].shape[0] for key in blocks)
    clamp = synthesis_kwargs.get("conv_clamp")
    return StyleGAN2Config(
        resolution=resolution,
        z_dim=z_dim,
        w_dim=w_dim,
        mapping_features=(mapping_weights[0].shape[1], *(w.shape[0] for w in mapping_weights)),
        channels=channels,
        c_dim=c_dim,
        embed_features=0 if embed is None else embed.shape[0],
        mapping_lr_mul=float(mapping_kwargs.get("lr_multiplier", 0.01)),
        architecture=_nvlabs_architecture(synthesis_kwargs.get("architecture", "skip")),
        image_channels=image_channels,
        use_noise=f"synthesis.b{resolution}.conv1.noise_const" in state_dict,
        style_bias_offset=0.0,
        scale_demodulated=False,
        conv_clamp=None if clamp is None else float(clamp),
    )


def _nvlabs_architecture(name: str) -> Literal["skip", "resnet", "origin"]:
    names = {"skip": "skip", "resnet": "resnet", "orig": "origin"}
    if name not in names:
        raise CheckpointError(
            f"NVlabs StyleGAN2 architecture {name!r} is not supported; use one of {sorted(names)}"
        )
    return names[name]  # type: ignore[return-value]


def nvlabs_to_genforce(
    state_dict: Mapping[str, torch.Tensor], config: StyleGAN2Config
) -> dict[str, torch.Tensor]:
    """Rename and transpose an NVlabs StyleGAN2 state dict into the genforce layout.

    Conv weights [out, in, k, k] -> [k, k, in, out] (upsampling ones also flipped: NVlabs stores
    them flipped, genforce as TensorFlow did); noise [R, R] -> [1, 1, R, R]; FIR filters (sum 1)
    -> genforce kernels (gain 4, flipped, since genforce correlates). Unknown keys are kept, so
    strict loading reports them.
    """
    out: dict[str, torch.Tensor] = {}
    rest = dict(state_dict)

    def take(key: str) -> torch.Tensor:
        if key not in rest:
            raise CheckpointError(
                f"the NVlabs StyleGAN2 network has no '{key}' (its architecture is "
                f"{config.architecture}, {config.resolution}px); pass an unmodified network pickle"
            )
        return rest.pop(key)

    for i in range(len(config.mapping_features) - 1):
        out[f"mapping.dense{i}.fc.weight"] = take(f"mapping.fc{i}.weight")
        out[f"mapping.dense{i}.bias"] = take(f"mapping.fc{i}.bias")
    if "mapping.embed.weight" in rest:
        out["mapping.embed.fc.weight"] = take("mapping.embed.weight")
        out["mapping.embed.bias"] = take("mapping.embed.bias")
    if "mapping.w_avg" in rest:
        out["truncation.w_avg"] = take("mapping.w_avg")

    def fir(key: str) -> torch.Tensor:
        return (take(key).flip(0, 1) * 4.0).reshape(1, 1, 4, 4)

    def conv(src: str, dst: str, *, up: bool) -> None:
        weight = take(f"{src}.weight").permute(2, 3, 1, 0)  # [k, k, in, out]
        out[f"{dst}.weight"] = weight.flip(0, 1) if up else weight
        out[f"{dst}.bias"] = take(f"{src}.bias")
        out[f"{dst}.style.fc.weight"] = take(f"{src}.affine.weight")
        out[f"{dst}.style.bias"] = take(f"{src}.affine.bias")
        if f"{src}.noise_const" in rest:
            noise = take(f"{src}.noise_const")
            out[f"{dst}.noise"] = noise.reshape(1, 1, *noise.shape)
            out[f"{dst}.noise_strength"] = take(f"{src}.noise_strength")
        if up:
            out[f"{dst}.filter.kernel"] = fir(f"{src}.resample_filter")
        else:
            rest.pop(f"{src}.resample_filter", None)  # conv1 holds an unused copy

    s = "synthesis"
    out[f"{s}.early_layer.const"] = take(f"{s}.b4.const").unsqueeze(0)
    for block in range(len(config.channels)):
        res = _INIT_RES * 2**block
        prefix = f"{s}.b{res}"
        if block > 0:
            conv(f"{prefix}.conv0", f"{s}.layer{2 * block - 1}", up=True)
            if f"{prefix}.skip.weight" in rest:
                skip = take(f"{prefix}.skip.weight").permute(2, 3, 1, 0).flip(0, 1)
                out[f"{s}.skip_layer{block - 1}.weight"] = skip
                out[f"{s}.skip_layer{block - 1}.filter.kernel"] = fir(
                    f"{prefix}.skip.resample_filter"
                )
        conv(f"{prefix}.conv1", f"{s}.layer{2 * block}", up=False)
        if f"{prefix}.torgb.weight" in rest:
            out[f"{s}.output{block}.weight"] = take(f"{prefix}.torgb.weight").permute(2, 3, 1, 0)
            out[f"{s}.output{block}.bias"] = take(f"{prefix}.torgb.bias")
            out[f"{s}.output{block}.style.fc.weight"] = take(f"{prefix}.torgb.affine.weight")
            out[f"{s}.output{block}.style.bias"] = take(f"{prefix}.torgb.affine.bias")
        block_filter = rest.pop(f"{prefix}.resample_filter", None)
        if block == 1 and config.architecture == "skip" and block_filter is not None:
            out[f"{s}.upsample.kernel"] = (block_filter.flip(0, 1) * 4.0).reshape(1, 1, 4, 4)
    out.update(rest)  # anything not recognised: strict loading names it
    return out
