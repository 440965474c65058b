"""A synthetic style-based scene generator with a known semantic hierarchy, and its pixel predictor.

rescore's end-to-end oracle: the generator follows the `Generator` protocol (z -> w -> wp -> image)
and each scene factor is driven by exactly one known group of layers,

    t_f = mean over l in layers(f) of  a_f . (wp[:, l] - w_avg) / scale_f
    factor_f = low_f + (high_f - low_f) * sigmoid(t_f)

with fixed orthonormal directions a_f and scale_f the spread of a_f . (w - w_avg), so t_f has unit
spread before truncation. Like a StyleGAN style affine, each layer reads its code through a weight
matrix (`layer_code_weights`): factor f is read by `FACTOR_CHANNELS[f]` style channels on every
layer of its group, each with weight row a_f. SeFa normalises rows, so these multiplicities set its
eigenvalues (|group(f)| x channels, distinct for 10 layers): SeFa on them recovers each a_f.
`SyntheticScenePredictor` measures every factor from pixels alone.
Re-scoring the generator with the predictor (HiGAN: SVM boundary in W, move one layer at a time)
must find each factor's effect peaking inside its group: `factor_layers` is the ground truth.

Every fixed tensor is drawn from `seed` and kept as a buffer, so a seed names one model and its
state dict round-trips.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import truncate
from .errors import RescoreError, ShapeMismatchError
from .stages import Stage, State, run_stages
from .synthetic_render import (
    BOX_ASPECT,
    BOX_VALUE,
    CLUTTER_MAX,
    FACTOR_NAMES,
    FACTORS,
    FLOOR_VALUE,
    LAYER_GROUPS,
    PAINTERS,
    PICTURE_BOX,
    PICTURE_REGION,
    PICTURE_VALUE,
    TOP_BAND_END,
    WALL_ROWS_END,
    WALL_VALUE,
    first_row_at,
    pixel_centres,
    region_slices,
    scene_coverage,
    scene_segmentation,
    speck_pattern,
)

_RESOLUTIONS_ALLOWED = (32, 64, 128, 256)
_GROUP_ENDS = (0.2, 0.5, 0.8)  # cumulative share of the layers ending each group but the last
_LRELU_SLOPE = 0.2
_NORM_EPS = 1e-8
_W_AVG_SAMPLES = 8192  # fixed seeded batch for w_avg and the per-factor scales
_BIAS_STD = 0.2
_FEATURE_CHANNELS = 8  # channels of each layer's feature map (`features`, for LinearGAN)
_INIT_RES = 4  # feature resolution of layers 0 and 1, doubling every two layers as in StyleGAN
# Style channels reading each factor (see the module docstring): distinct counts, chosen so the
# SeFa eigenvalues |group| x channels of the 10-layer default differ for every factor.
FACTOR_CHANNELS: dict[str, int] = {
    "horizon": 8,
    "tilt": 7,
    "object_size": 9,
    "object_x": 6,
    "object_presence": 3,
    "lighting": 2,
    "clutter": 1,
    "palette_hue": 5,
    "palette_saturation": 4,
}


def default_layer_groups(num_layers: int) -> dict[str, tuple[int, ...]]:
    """Split layers 0..L-1 into the contiguous groups of `LAYER_GROUPS`, in shares 2:3:3:2.

    For 10 layers: layout (0, 1), objects (2, 3, 4), attributes (5, 6, 7), colour (8, 9).
    """
    if num_layers < len(LAYER_GROUPS):
        raise ShapeMismatchError(
            f"the synthetic generator needs at least {len(LAYER_GROUPS)} layers (one per group "
            f"{LAYER_GROUPS}), got num_layers={num_layers}; pass a larger num_layers"
        )
    ends = [round(share * num_layers) for share in _GROUP_ENDS] + [num_layers]
    starts = [0, *ends[:-1]]
    return {g: tuple(range(s, e)) for g, s, e in zip(LAYER_GROUPS, starts, ends, strict=True)}


class SyntheticSceneGenerator(nn.Module):
    """Seeded mapping MLP + factor read-out + scene renderer, with the StyleGAN interface.

    z [B, z_dim] -> w [B, w_dim] -> wp [B, num_layers, w_dim] -> images [B, 3, R, R] in [-1, 1].
    """

    def __init__(
        self,
        *,
        z_dim: int = 32,
        w_dim: int = 32,
        num_layers: int = 10,
        resolution: int = 64,
        truncation_psi: float = 0.7,
        truncation_layers: int = 4,
        seed: int = 0,
        edge_softness: float = 0.6,
    ) -> None:
        super().__init__()
        if resolution not in _RESOLUTIONS_ALLOWED:
            raise ShapeMismatchError(
                f"resolution {resolution} is not supported by the synthetic generator; "
                f"choose one of {_RESOLUTIONS_ALLOWED}"
            )
        if w_dim < len(FACTORS):
            raise ShapeMismatchError(
                f"w_dim={w_dim} cannot hold {len(FACTORS)} orthogonal factor directions; "
                f"pass w_dim >= {len(FACTORS)}"
            )
        if edge_softness <= 0:
            raise RescoreError(
                f"edge_softness={edge_softness} must be a positive width in pixels; pass e.g. 0.6"
            )
        groups = default_layer_groups(num_layers)
        if not 0 <= truncation_layers <= num_layers:
            raise ShapeMismatchError(
                f"truncation_layers={truncation_layers} is outside 0..num_layers={num_layers}; "
                f"pass a value in that range"
            )
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_layers = num_layers
        self.resolution = resolution
        self.truncation_psi = float(truncation_psi)
        self.truncation_layers = truncation_layers
        self.seed = seed
        self.edge_softness = edge_softness
        self.factor_names: tuple[str, ...] = FACTOR_NAMES
        self.factor_layers: dict[str, tuple[int, ...]] = {f.name: groups[f.group] for f in FACTORS}
        self.group_layers: dict[str, tuple[int, ...]] = groups

        # Seeded tensors, drawn in a fixed order: they *are* the model (persistent buffers).
        rng = torch.Generator().manual_seed(seed)
        self.register_buffer("mapping_weight1", _he_normal(w_dim, z_dim, rng))  # [D, Z]
        self.register_buffer("mapping_bias1", _BIAS_STD * torch.randn(w_dim, generator=rng))
        self.register_buffer("mapping_weight2", _he_normal(w_dim, w_dim, rng))  # [D, D]
        self.register_buffer("mapping_bias2", _BIAS_STD * torch.randn(w_dim, generator=rng))
        basis, _ = torch.linalg.qr(torch.randn(w_dim, len(FACTORS), generator=rng))  # [D, F]
        self.register_buffer("directions", basis.T.contiguous())  # [F, D], orthonormal rows
        self.register_buffer("speck_pattern", speck_pattern(resolution, rng))  # [R, R]
        with torch.no_grad():
            w = self.map(torch.randn(_W_AVG_SAMPLES, z_dim, generator=rng))  # [N, D]
        w_avg = w.mean(dim=0)  # [D]
        self.register_buffer("w_avg", w_avg)
        self.register_buffer("factor_scale", ((w - w_avg) @ self.directions.T).std(dim=0))  # [F]
        lift = torch.randn(num_layers, _FEATURE_CHANNELS, 4, generator=rng)  # [L, C, 3 + bias]
        self.register_buffer("feature_lift", lift)

        # Derived from the hyper-parameters (not stored in the state dict): the factor each style
        # channel reads [C] and the read-out [L, C, F] that averages factor f's channels over the
        # layers of its group (so t_f is the plain mean over layers given above).
        owner = [i for i, f in enumerate(FACTORS) for _ in range(FACTOR_CHANNELS[f.name])]  # [C]
        read_out = torch.zeros(num_layers, len(owner), len(FACTORS))  # [L, C, F]
        for c, i in enumerate(owner):
            layers = list(groups[FACTORS[i].group])
            read_out[layers, c, i] = 1.0 / (len(layers) * FACTOR_CHANNELS[FACTORS[i].name])
        self.register_buffer("style_owner", torch.tensor(owner), persistent=False)
        self.register_buffer("style_read_out", read_out, persistent=False)
        coefficients = torch.ones(num_layers)
        coefficients[:truncation_layers] = self.truncation_psi
        self.register_buffer("_truncation", coefficients, persistent=False)
        self.register_buffer("factor_low", torch.tensor([f.low for f in FACTORS]), persistent=False)
        self.register_buffer(
            "factor_high", torch.tensor([f.high for f in FACTORS]), persistent=False
        )

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """Mapping network: pixel norm, then two leaky-ReLU dense layers. z [B, Z] -> w [B, D]."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ShapeMismatchError(
                f"z has shape {tuple(z.shape)}, the synthetic generator expects [B, {self.z_dim}]"
            )
        x = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + _NORM_EPS)  # [B, Z]
        x = F.leaky_relu(x @ self.mapping_weight1.T + self.mapping_bias1, _LRELU_SLOPE)  # [B, D]
        return F.leaky_relu(x @ self.mapping_weight2.T + self.mapping_bias2, _LRELU_SLOPE)

    def truncation_coefficients(self) -> torch.Tensor:
        """psi on the first `truncation_layers` layers, 1.0 after: [L]."""
        return self._truncation

    def average_w(self) -> torch.Tensor:
        """Mean of the mapping over a fixed seeded batch of z: [D]."""
        return self.w_avg

    def factor_codes(self, wp: torch.Tensor) -> torch.Tensor:
        """Ground-truth factor codes t_f (before squashing): wp [B, L, D] -> [B, F]."""
        self._check_wp(wp)
        mixed = wp.new_zeros(wp.shape[0], len(self.factor_names))  # [B, F]
        for group in LAYER_GROUPS:
            mixed = self._read_group(mixed, wp, group)
        return mixed / self.factor_scale

    def _read_group(self, mixed: torch.Tensor, wp: torch.Tensor, group: str) -> torch.Tensor:
        """Add the style read-out of one layer group's codes to the factor sums mixed [B, F]
        (group by group, so the sums of earlier groups can be reused when later codes move)."""
        layers = self.group_layers[group]
        styles = (wp[:, layers[0] : layers[-1] + 1] - self.w_avg) @ self.style_weight().T
        read_out = self.style_read_out[layers[0] : layers[-1] + 1]  # [l, C, F]
        return mixed + torch.einsum("blc,lcf->bf", styles, read_out)  # [B, F]

    def synthesis_stages(self) -> list[Stage]:
        """`synthesize` as stages (`rescore.models.stages`), one per layer group in
        `LAYER_GROUPS` order: read the group's codes into the factor sums (state [B, F]), then
        paint what the group's factors decide (`synthetic_render.PAINTERS`), beside the sums."""

        def stage(state: State, wp: torch.Tensor, index: int) -> State:
            mixed = state[0] if state else wp.new_zeros(wp.shape[0], len(self.factor_names))
            mixed = self._read_group(mixed, wp, LAYER_GROUPS[index])  # [B, F]
            values = self._squash(mixed / self.factor_scale)  # final for this group's factors
            painted = PAINTERS[index](values, state[1:], self.speck_pattern, self.edge_softness)
            return painted if index == len(PAINTERS) - 1 else (mixed, *painted)

        return [
            Stage(self.group_layers[group], lambda s, wp, i=i: stage(s, wp, i))
            for i, group in enumerate(LAYER_GROUPS)
        ]

    def style_weight(self) -> torch.Tensor:
        """The style channels' weight rows [C, D]: channel c reads its factor's direction."""
        return self.directions[self.style_owner]

    def layer_code_weights(self) -> list[torch.Tensor]:
        """Per layer l, the style weight rows [C_l, D] that read wp[:, l] (for SeFa)."""
        reads = self.style_read_out.sum(dim=2) > 0  # [L, C]
        weight = self.style_weight()
        return [weight[reads[layer]] for layer in range(self.num_layers)]

    def factor_values(self, wp: torch.Tensor) -> torch.Tensor:
        """Ground-truth factor values in their physical units (`FACTORS` ranges): [B, F]."""
        return self._squash(self.factor_codes(wp))

    def _squash(self, codes: torch.Tensor) -> torch.Tensor:
        """Factor codes [B, F] -> values in their physical units [B, F]."""
        return self.factor_low + (self.factor_high - self.factor_low) * torch.sigmoid(codes)

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        """Synthesis: wp [B, L, D] -> images [B, 3, R, R] float32 in [-1, 1]."""
        self._check_wp(wp)
        return run_stages(self.synthesis_stages(), (), wp)

    def segmentation(self, wp: torch.Tensor) -> torch.Tensor:
        """The renderer's true segmentation of synthesize(wp): labels [B, R, R] int64 indexing
        `SEGMENT_CLASSES` (wall, floor, picture, box)."""
        return scene_segmentation(self.factor_values(wp), self.resolution, self.edge_softness)

    def features(self, wp: torch.Tensor, layers: list[int]) -> list[torch.Tensor]:
        """Feature maps of the given layers (LinearGAN): [B, 8, R_l, R_l] per layer.

        The scene model has no convolutions; layer l's feature map is a seeded leaky-ReLU lift
        (`feature_lift[l]`, 3 -> 8 channels) of the floor/picture/box coverage, area-pooled to
        the resolution StyleGAN has at layer l (4 px at layers 0-1, doubling every two layers).
        """
        if not layers or min(layers) < 0 or max(layers) >= self.num_layers:
            raise ShapeMismatchError(
                f"feature layers {list(layers)} are outside 0..{self.num_layers - 1}; "
                f"pick layers of the synthetic generator"
            )
        coverage = scene_coverage(self.factor_values(wp), self.resolution, self.edge_softness)
        maps = torch.stack(coverage, dim=1)  # [B, 3, R, R]
        out = []
        for layer in layers:
            size = min(self.resolution, _INIT_RES * 2 ** (layer // 2))
            pooled = F.adaptive_avg_pool2d(maps, size)  # [B, 3, r, r]
            lift = self.feature_lift[layer]  # [C, 4]
            mixed = torch.einsum("bkhw,ck->bchw", pooled, lift[:, :3]) + lift[:, 3, None, None]
            out.append(F.leaky_relu(mixed, _LRELU_SLOPE))  # [B, C, r, r]
        return out

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, Z] -> images [B, 3, R, R]: synthesize(truncate(map(z)))."""
        wp = truncate(self.map(z), self.w_avg, self._truncation)  # [B, L, D]
        return self.synthesize(wp)

    def _check_wp(self, wp: torch.Tensor) -> None:
        if wp.dim() != 3 or wp.shape[1:] != (self.num_layers, self.w_dim):
            raise ShapeMismatchError(
                f"wp has shape {tuple(wp.shape)}, the synthetic generator expects "
                f"[B, {self.num_layers}, {self.w_dim}]"
            )


def _he_normal(out_dim: int, in_dim: int, rng: torch.Generator) -> torch.Tensor:
    """N(0, 2 / in_dim) weights [out, in]: keeps the spread of activations through leaky ReLUs."""
    return torch.randn(out_dim, in_dim, generator=rng) * math.sqrt(2.0 / in_dim)


# Predictor thresholds, all in units of the lighting level (see `synthetic_render`).
_WALL_MIN = WALL_VALUE * (1.0 - CLUTTER_MAX)  # darkest wall pixel
_FLOOR_MAX = FLOOR_VALUE * (1.0 + CLUTTER_MAX)  # brightest floor pixel
_BOX_MIN_CHANNEL = 0.6  # above any wall/floor pixel's min channel (saturation >= 0.4)
_COLUMN_EXCLUSION = 10.0  # a column with achromaticity 0.1 below the wall rows gets no weight
_HUE_WRAP = 0.92  # hues above this are read as negative (the palette avoids red's wrap-around)
_EPS = 1e-6


class SyntheticScenePredictor(nn.Module):
    """Measures every synthetic scene factor from pixels: images [B, 3, R, R] -> scores [B, F].

    Scores are estimates in each factor's units (`object_size` as box height from its area,
    `clutter` as the relative brightness spread of the wall band). It uses the scene's shared
    constants only, never the generator's seeded tensors.
    """

    semantic_names: tuple[str, ...] = FACTOR_NAMES
    # Hard bounds where the measurement guarantees one (pixels in [0, 1]): box height from a
    # clamped area, a weighted mean of pixel centres, band brightness / WALL_VALUE, hue in
    # [_HUE_WRAP - 1, _HUE_WRAP), saturation 1 - min/max; the others are estimates (None).
    score_range = None
    score_ranges = (
        None,  # horizon
        None,  # tilt
        (0.0, 1.0 / math.sqrt(BOX_ASPECT)),  # object_size
        (0.0, 1.0),  # object_x
        None,  # object_presence
        (0.0, 1.0 / WALL_VALUE),  # lighting
        None,  # clutter
        (_HUE_WRAP - 1.0, _HUE_WRAP),  # palette_hue
        (0.0, 1.0),  # palette_saturation
    )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, R, R] float32 in [-1, 1] -> scores [B, F] (`semantic_names` order)."""
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[2] != images.shape[3]:
            raise ShapeMismatchError(
                f"images have shape {tuple(images.shape)}; the synthetic predictor expects "
                f"square RGB images [B, 3, R, R]"
            )
        res = images.shape[-1]
        # Work in [0, 1]; the channel max and min commute with the affine map from [-1, 1].
        value = images.amax(dim=1) * 0.5 + 0.5  # [B, R, R] HSV value
        low = images.amin(dim=1) * 0.5 + 0.5  # [B, R, R] min channel
        centres = pixel_centres(res, images.device)  # [R]

        # 1. The top band is plain wall: palette, lighting and specks, each blind to the others.
        band_rows = first_row_at(TOP_BAND_END, res)
        band_rgb = images[:, :, :band_rows].mean(dim=(2, 3)) * 0.5 + 0.5  # [B, 3]
        band_max = band_rgb.amax(dim=1).clamp_min(_EPS)  # [B]
        lighting = band_max / WALL_VALUE
        saturation = 1.0 - band_rgb.amin(dim=1) / band_max
        hue = _hue(band_rgb)
        band_value = value[:, :band_rows].flatten(1)  # [B, band pixels]
        clutter = band_value.std(dim=1) / band_value.mean(dim=1).clamp_min(_EPS)
        level = lighting.view(-1, 1, 1)

        # 2. The picture darkens its region in proportion to its opacity.
        rows, cols = region_slices(res, PICTURE_REGION)
        box_rows, box_cols = region_slices(res, PICTURE_BOX)
        covered = _count(box_rows, box_cols) / _count(rows, cols)
        darkening = 1.0 - value[:, rows, cols].mean(dim=(1, 2)) / (lighting * WALL_VALUE)  # [B]
        presence = darkening / ((1.0 - PICTURE_VALUE / WALL_VALUE) * covered)

        # 3. The box is the only bright grey: its min channel beats every coloured surface's.
        box = ((low / level - _BOX_MIN_CHANNEL) / (BOX_VALUE - _BOX_MIN_CHANNEL)).clamp(0.0, 1.0)
        box_columns = box.sum(dim=1)  # [B, R]
        box_area = box_columns.sum(dim=1) / res**2  # [B] fraction of the image
        object_size = torch.sqrt(box_area / BOX_ASPECT)
        object_x = (box_columns * centres).sum(dim=1) / box_columns.sum(dim=1).clamp_min(_EPS)

        # 4. Horizon line: per column, rows above WALL_ROWS_END are wall, below it count wall-
        # bright pixels; fit a line over the columns the box leaves untouched (achromatic pixels).
        first = first_row_at(WALL_ROWS_END, res)
        lower = value[:, first:] / level  # [B, R', R]
        wallness = ((lower - _FLOOR_MAX) / (_WALL_MIN - _FLOOR_MAX)).clamp(0.0, 1.0)
        line = (first + wallness.sum(dim=1)) / res  # [B, R] wall/floor boundary per column
        lower_sat = 1.0 - low[:, first:] / value[:, first:].clamp_min(_EPS)  # [B, R', R]
        achromatic = (1.0 - lower_sat / saturation.clamp_min(_EPS).view(-1, 1, 1)).clamp_min(0.0)
        weight = (1.0 - _COLUMN_EXCLUSION * achromatic.amax(dim=1)).clamp_min(0.0)  # [B, R]
        horizon, tilt = _weighted_line_fit(centres, line, weight)

        scores = (
            horizon,
            tilt,
            object_size,
            object_x,
            presence,
            lighting,
            clutter,
            hue,
            saturation,
        )
        return torch.stack(scores, dim=1)  # [B, F]


def _count(rows: slice, cols: slice) -> int:
    """Number of pixels in a (rows, columns) pair of slices."""
    return (rows.stop - rows.start) * (cols.stop - cols.start)


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """HSV hue in turns of RGB [B, 3] -> [B], in [_HUE_WRAP - 1, _HUE_WRAP)."""
    r, g, b = rgb.unbind(dim=1)
    top = rgb.amax(dim=1)
    spread = (top - rgb.amin(dim=1)).clamp_min(_EPS)
    sextant = torch.where(
        top == r,
        torch.remainder((g - b) / spread, 6.0),
        torch.where(top == g, (b - r) / spread + 2.0, (r - g) / spread + 4.0),
    )
    hue = sextant / 6.0
    return torch.where(hue >= _HUE_WRAP, hue - 1.0, hue)


def _weighted_line_fit(
    x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted least-squares line y = c + m (x - 0.5): x [R], y and weight [B, R] -> (c, m) [B]."""
    total = weight.sum(dim=1).clamp_min(_EPS)
    mean_x = (weight * x).sum(dim=1) / total  # [B]
    mean_y = (weight * y).sum(dim=1) / total  # [B]
    dx = x - mean_x[:, None]  # [B, R]
    covariance = (weight * dx * (y - mean_y[:, None])).sum(dim=1)  # [B]
    slope = covariance / (weight * dx**2).sum(dim=1).clamp_min(_EPS)
    return mean_y + slope * (0.5 - mean_x), slope


def build_synthetic(
    seed: int = 0, resolution: int = 64, truncation_psi: float = 0.7, truncation_layers: int = 4
) -> SyntheticSceneGenerator:
    """The synthetic scene generator (z_dim = w_dim = 32, 10 layers) in eval mode."""
    return SyntheticSceneGenerator(
        resolution=resolution,
        truncation_psi=truncation_psi,
        truncation_layers=truncation_layers,
        seed=seed,
    ).eval()


def build_synthetic_predictor(
    generator: SyntheticSceneGenerator | None = None,
) -> SyntheticScenePredictor:
    """The pixel predictor for synthetic scenes.

    `generator` is accepted so builders can pair the two, and is not read: the predictor relies on
    the scene's shared constants only, so it works for every seed and resolution.
    """
    return SyntheticScenePredictor().eval()
