"""LinearGAN linear semantic extraction (LSE): a segmentation read linearly off generator features.

    features(wp, layers) -> upsample each to R x R -> concat [B, C, R, R] -> 1x1 linear map
    -> class logits [B, K, R, R] -> softmax -> per class: area fraction, centroid x, centroid y

Fitted from a few labelled images (LinearGAN: 8 suffice) by softmax cross-entropy over all their
pixels (full-batch L-BFGS on standardised features; the standardisation is folded into the map).
Used as a predictor, it reads the generator's features instead of pixels: `reads_features` tells
the fused pass (`models.fused`) which layers to hand it, so no image is needed.

Labels come from the synthetic model's renderer (`segmentation(wp)`, the true segmentation) or
from any segmenter plugged in as `package.module:factory`: factory() returns a module mapping
images [B, 3, H, W] in [-1, 1] to labels [B, H, W] (int64) with a `class_names` tuple.

Files: `<name>.npz` (weight [K, C], bias [K], layers [n], channels [n], resolution) and
`<name>.json` (format `rescore.lse` version 1: class names, layers, generator, training summary).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ShapeMismatchError

LSE_FORMAT = "rescore.lse"
LSE_FORMAT_VERSION = 1
_EPS = 1e-6


class LinearSemanticPredictor(nn.Module):
    """Per-pixel linear classifier on generator features: features -> scores [B, 3K].

    Semantics per class c: `<c>_area` (mean class probability over the image), `<c>_x` and
    `<c>_y` (probability-weighted centroid, fractions of the image side).
    """

    def __init__(
        self,
        layers: Sequence[int],
        channels: Sequence[int],
        class_names: Sequence[str],
        weight: torch.Tensor,
        bias: torch.Tensor,
        resolution: int,
    ) -> None:
        super().__init__()
        if weight.shape != (len(class_names), sum(channels)) or bias.shape != (len(class_names),):
            raise ShapeMismatchError(
                f"LSE weight {tuple(weight.shape)} / bias {tuple(bias.shape)} do not fit "
                f"{len(class_names)} classes and {sum(channels)} feature channels"
            )
        self.reads_features: tuple[int, ...] = tuple(int(i) for i in layers)
        self.channels = tuple(int(c) for c in channels)
        self.class_names = tuple(class_names)
        self.resolution = int(resolution)
        self.register_buffer("weight", weight.float())  # [K, C]
        self.register_buffer("bias", bias.float())  # [K]
        self.semantic_names: tuple[str, ...] = tuple(
            f"{name}_{what}" for name in self.class_names for what in ("area", "x", "y")
        )
        self.score_range = (0.0, 1.0)  # areas and centroids are fractions

    def logits(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Class logits [B, K, R, R] from the feature maps of `reads_features`, in that order."""
        got = tuple(f.shape[1] for f in features)
        if got != self.channels:
            raise ShapeMismatchError(
                f"the LSE map was fitted on feature channels {self.channels} of layers "
                f"{self.reads_features}, got {got}; use it with the generator it was fitted on"
            )
        stacked = upsampled(features, self.resolution)  # [B, C, R, R]
        return torch.einsum("bchw,kc->bkhw", stacked, self.weight) + self.bias.view(1, -1, 1, 1)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """features (one [B, C_l, r_l, r_l] per layer) -> scores [B, 3K] (`semantic_names`)."""
        probabilities = torch.softmax(self.logits(features), dim=1)  # [B, K, R, R]
        res = self.resolution
        centres = (torch.arange(res, device=probabilities.device, dtype=torch.float32) + 0.5) / res
        mass = probabilities.sum(dim=(2, 3))  # [B, K]
        area = mass / res**2
        x = (probabilities.sum(dim=2) * centres).sum(dim=2) / mass.clamp_min(_EPS)
        y = (probabilities.sum(dim=3) * centres).sum(dim=2) / mass.clamp_min(_EPS)
        return torch.stack([area, x, y], dim=2).flatten(1)  # [B, K * 3]


def upsampled(features: Sequence[torch.Tensor], resolution: int) -> torch.Tensor:
    """Bilinearly resize feature maps to resolution x resolution and concatenate: [B, C, R, R]."""
    return torch.cat(
        [
            F.interpolate(f.float(), size=(resolution, resolution), mode="bilinear")
            for f in features
        ],
        dim=1,
    )


def fit_linear_segmenter(
    features: torch.Tensor, labels: torch.Tensor, num_classes: int, *, steps: int = 30
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax regression of labels [N, R, R] on features [N, C, R, R]: (weight [K, C], bias [K]).

    Deterministic: full-batch L-BFGS on features standardised per channel (folded back into the
    returned weight and bias), with a small L2 penalty so separable classes stay finite.
    """
    pixels = features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]).double()  # [P, C]
    targets = labels.reshape(-1)
    if int(targets.max()) >= num_classes or int(targets.min()) < 0:
        raise ShapeMismatchError(f"labels must lie in 0..{num_classes - 1}")
    mean, std = pixels.mean(dim=0), pixels.std(dim=0).clamp_min(1e-6)
    standard = (pixels - mean) / std
    weight = torch.zeros(num_classes, pixels.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [weight, bias], max_iter=steps, line_search_fn="strong_wolfe", tolerance_grad=1e-9
    )

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        value = F.cross_entropy(standard @ weight.T + bias, targets) + 1e-4 * weight.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    folded = (weight / std).detach()
    return folded.float(), (bias - folded @ mean).detach().float()


Labeller = Callable[[torch.Tensor], torch.Tensor]  # wp [B, L, D] -> labels [B, R, R]


def train_lse(
    generator: nn.Module,
    layers: Sequence[int],
    labeller: Labeller,
    class_names: Sequence[str],
    *,
    num_images: int = 8,
    seed: int = 0,
    resolution: int | None = None,
) -> LinearSemanticPredictor:
    """Fit an LSE predictor on `num_images` seeded latents of `generator` labelled by `labeller`.

    The latents are z ~ N(0, I) from `seed`, mapped and truncated as in a run.
    """
    from .base import truncate

    z = torch.randn(num_images, generator.z_dim, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        wp = truncate(
            generator.map(z), generator.average_w(), generator.truncation_coefficients()
        )  # [N, L, D]
        labels = labeller(wp)  # [N, H, W]
        res = resolution or labels.shape[-1]
        if labels.shape[-1] != res:
            labels = F.interpolate(labels[:, None].float(), size=(res, res), mode="nearest")
            labels = labels[:, 0].long()
        features = generator.features(wp, list(layers))
        channels = [f.shape[1] for f in features]
        stacked = upsampled(features, res)  # [N, C, R, R]
    weight, bias = fit_linear_segmenter(stacked, labels, len(class_names))
    return LinearSemanticPredictor(layers, channels, class_names, weight, bias, res)


def segmenter_labeller(segmenter: nn.Module, generator: nn.Module) -> Labeller:
    """A user's image segmenter as a labeller: wp -> synthesize -> segmenter -> labels."""

    def label(wp: torch.Tensor) -> torch.Tensor:
        return segmenter(generator.synthesize(wp)).long()

    return label


def save_lse(predictor: LinearSemanticPredictor, path: Path, meta: dict[str, Any]) -> Path:
    """Write `<path>.npz` (arrays, no pickles) and `<path>.json` (sidecar); returns the .npz."""
    path = Path(path).with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        path,
        weight=predictor.weight.cpu().numpy(),
        bias=predictor.bias.cpu().numpy(),
        layers=np.array(predictor.reads_features),
        channels=np.array(predictor.channels),
        resolution=np.array(predictor.resolution),
    )
    sidecar = {
        "format": LSE_FORMAT,
        "format_version": LSE_FORMAT_VERSION,
        "class_names": list(predictor.class_names),
        "layers": list(predictor.reads_features),
        "resolution": predictor.resolution,
        **meta,
    }
    path.with_suffix(".json").write_text(json.dumps(sidecar, indent=2))
    return path


def load_lse(path: Path) -> LinearSemanticPredictor:
    """Read an LSE predictor written by `save_lse` (np.load without pickles)."""
    path = Path(path)
    sidecar_path = path.with_suffix(".json")
    if not path.is_file() or not sidecar_path.is_file():
        raise CheckpointError(
            f"LSE file {path} or its sidecar {sidecar_path.name} is missing; fit one with "
            f"`rescore lineargan -o DIR`"
        )
    try:
        sidecar = json.loads(sidecar_path.read_text())
        with np.load(path, allow_pickle=False) as arrays:
            values = {k: arrays[k] for k in ("weight", "bias", "layers", "channels", "resolution")}
    except (OSError, ValueError, KeyError) as error:
        raise CheckpointError(
            f"{path} is not a readable LSE file ({error}); fit it again"
        ) from error
    if sidecar.get("format") != LSE_FORMAT:
        raise CheckpointError(f"{sidecar_path} is not a {LSE_FORMAT} sidecar; fit it again")
    return LinearSemanticPredictor(
        values["layers"].tolist(),
        values["channels"].tolist(),
        sidecar["class_names"],
        torch.from_numpy(values["weight"]),
        torch.from_numpy(values["bias"]),
        int(values["resolution"]),
    ).eval()


def fit_lse_file(
    generator: nn.Module,
    path: Path,
    *,
    layers: Sequence[int],
    segmenter: str = "synthetic",
    num_images: int = 8,
    seed: int = 0,
    resolution: int | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Fit an LSE predictor on `generator` and write it to `path` (`rescore lineargan`).

    segmenter: 'synthetic' (the generator's own `segmentation(wp)`: the renderer's truth) or a
    `package.module:factory` whose factory() returns an image segmenter with `class_names`.
    """
    from .registry import _resolve
    from .synthetic_render import SEGMENT_CLASSES

    if segmenter == "synthetic":
        if not hasattr(generator, "segmentation"):
            raise CheckpointError(
                "--segmenter synthetic needs the synthetic generator (it knows the true "
                "segmentation); pass --segmenter package.module:factory for other generators"
            )
        labeller, classes = generator.segmentation, SEGMENT_CLASSES
    else:
        model = _resolve(segmenter, {}, kind="segmenter")().eval()
        labeller, classes = segmenter_labeller(model, generator), tuple(model.class_names)
    predictor = train_lse(
        generator,
        layers,
        labeller,
        classes,
        num_images=num_images,
        seed=seed,
        resolution=resolution,
    )
    training = {"segmenter": segmenter, "num_images": num_images, "seed": seed}
    return save_lse(predictor, path, {"training": training, **(meta or {})})
