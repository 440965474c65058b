"""The Places365 scene predictor HiGAN scores scenes with (its "scene" predictor).

A WideResNet-18 trained on Places365 gives 365 scene-category probabilities (softmax of its
logits) and, through a separate linear head on its pooled features, 102 SUN attribute scores
(``W_sceneattribute_wideresnet18.npy``). `Places365Predictor` takes generator images in [-1, 1]
and reproduces HiGAN's pipeline on the device, batched: quantize to uint8 levels as genforce's
``postprocess`` does, Pillow's bilinear resize to 224x224 (bit-exact, `resize.PilBilinearResize`),
``ToTensor`` (/255) and ImageNet ``Normalize``, then the network.

Files (the Places365 release, as HiGAN's ``predictor_settings`` names them), in one directory:
    wideresnet18_places365.pth.tar      {'state_dict': {'module.<name>': tensor}, ...}
    W_sceneattribute_wideresnet18.npy   float array (102, 512)
    categories_places365.txt            365 lines "/a/airfield 0" (path, index)
    labels_sunattribute.txt             102 lines, one attribute name each
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import as_state_dict, load_strict, read_checkpoint
from .errors import CheckpointError, ShapeMismatchError
from .resize import PilBilinearResize

NUM_CATEGORIES = 365
NUM_ATTRIBUTES = 102
FEATURE_DIM = 512
INPUT_SIZE = 224
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CHECKPOINT_FILE = "wideresnet18_places365.pth.tar"
ATTRIBUTE_WEIGHT_FILE = "W_sceneattribute_wideresnet18.npy"
CATEGORY_FILE = "categories_places365.txt"
ATTRIBUTE_FILE = "labels_sunattribute.txt"
_FILE_CONTENTS = {
    CHECKPOINT_FILE: "the WideResNet-18 Places365 checkpoint, a dict with a 'state_dict' entry",
    ATTRIBUTE_WEIGHT_FILE: f"the SUN attribute weights, a ({NUM_ATTRIBUTES}, {FEATURE_DIM}) array",
    CATEGORY_FILE: f"the {NUM_CATEGORIES} category labels, lines like '/a/airfield 0'",
    ATTRIBUTE_FILE: f"the {NUM_ATTRIBUTES} SUN attribute names, one a line",
}
_WHAT = "Places365 WideResNet-18 checkpoint"


class _BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BN, identity or 1x1-conv shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class WideResNet18(nn.Module):
    """The Places365 "wideresnet18": ResNet-18 without the stem max-pool, 14x14 average pool.

    Input [B, 3, 224, 224] normalized images; output (logits [B, num_classes], pooled features
    [B, 512]). Without the max-pool the last stage is 14x14 (not 7x7) at 224 input, hence the
    pool size. Parameter names match the published checkpoint (after its 'module.' prefix).
    """

    def __init__(
        self,
        num_classes: int = NUM_CATEGORIES,
        stage_channels: tuple[int, ...] = (64, 128, 256, 512),
        blocks_per_stage: int = 2,
        pool_size: int = 14,
    ) -> None:
        super().__init__()
        stem = stage_channels[0]
        self.conv1 = nn.Conv2d(3, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        in_channels = stem
        for index, channels in enumerate(stage_channels):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(_BasicBlock(in_channels, channels, stride))
                in_channels = channels
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = len(stage_channels)
        self.avgpool = nn.AvgPool2d(pool_size)
        self.fc = nn.Linear(in_channels, num_classes)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """[B, 3, 224, 224] normalized images -> pooled features [B, 512]."""
        x = self.relu(self.bn1(self.conv1(x)))  # [B, 64, 112, 112]
        for index in range(self.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)  # last: [B, 512, 14, 14]
        return torch.flatten(self.avgpool(x), 1)  # [B, 512]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, 3, 224, 224] -> (logits [B, num_classes], pooled features [B, 512])."""
        features = self.pooled_features(x)
        return self.fc(features), features


def genforce_quantize(images: torch.Tensor) -> torch.Tensor:
    """Generator images in [-1, 1] -> uint8 levels, held as float32 integers in [0, 255].

    The same float32 operations, in the same order, as genforce/HiGAN's ``postprocess``:
    ``clip((x + 1) * 255 / 2 + 0.5, 0, 255).astype(uint8)`` (the cast truncates, i.e. floors).
    """
    levels = (images.float() + 1.0) * 255.0 / 2.0 + 0.5
    return torch.floor(levels.clamp(0.0, 255.0))


class Places365Predictor(nn.Module):
    """HiGAN's scene predictor: images [B, 3, H, W] in [-1, 1] -> scores [B, 365 + 102].

    Columns: the 365 category probabilities (softmax), then the 102 SUN attribute scores
    (pooled features . W_attribute^T, unbounded). `semantic_names` follows the same order:
    ``category_<name>`` with HiGAN's category names, then HiGAN's attribute names.

    `clamp_negative_fc_weights` (default True) reproduces a quirk of HiGAN (and of the Places365
    demo it copies): after loading, ``fc_weight[fc_weight < 0] = 0`` runs on a numpy view that
    shares memory with the network, so HiGAN's category logits use the fc weight clamped at 0.
    The clamp is applied in `forward`; the stored weight stays as in the file. Pass False for the
    plain classifier. The attribute scores do not use the fc layer and are unaffected.
    """

    def __init__(
        self,
        network: WideResNet18,
        attribute_weight: torch.Tensor,
        category_names: Sequence[str],
        attribute_names: Sequence[str],
        *,
        clamp_negative_fc_weights: bool = True,
    ) -> None:
        super().__init__()
        num_categories = network.fc.out_features
        feature_dim = network.fc.in_features
        if len(category_names) != num_categories:
            raise ShapeMismatchError(
                f"{len(category_names)} category names for {num_categories} network outputs; "
                f"pass one name per category"
            )
        if attribute_weight.ndim != 2 or attribute_weight.shape[1] != feature_dim:
            raise ShapeMismatchError(
                f"attribute weight has shape {tuple(attribute_weight.shape)}, expected "
                f"(num_attributes, {feature_dim})"
            )
        if len(attribute_names) != attribute_weight.shape[0]:
            raise ShapeMismatchError(
                f"{len(attribute_names)} attribute names for {attribute_weight.shape[0]} "
                f"attribute weight rows; pass one name per row"
            )
        self.network = network
        self.register_buffer("attribute_weight", attribute_weight.detach().float().clone())
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.resize = PilBilinearResize((INPUT_SIZE, INPUT_SIZE))
        self.clamp_negative_fc_weights = clamp_negative_fc_weights
        self.category_names = tuple(category_names)
        self.attribute_names = tuple(attribute_names)
        self.semantic_names = tuple(f"category_{name}" for name in self.category_names) + (
            self.attribute_names
        )
        # Probabilities lie in [0, 1]; attribute scores are unbounded (no declared range).
        self.score_range = None
        self.score_ranges = ((0.0, 1.0),) * num_categories + (None,) * len(self.attribute_names)
        self.eval()

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> [B, 3, 224, 224] normalized, as HiGAN feeds the network."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ShapeMismatchError(
                f"expected RGB images [B, 3, H, W], got shape {tuple(images.shape)}"
            )
        levels = self.resize(genforce_quantize(images))  # [B, 3, 224, 224] in 0..255
        return (levels / 255.0 - self.mean) / self.std  # ToTensor, then Normalize

    def category_weight(self) -> torch.Tensor:
        """The fc weight the category logits use: [365, 512], clamped at 0 by default."""
        weight = self.network.fc.weight
        return weight.clamp(min=0.0) if self.clamp_negative_fc_weights else weight

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] float in [-1, 1] -> scores [B, 365 + 102] float32."""
        features = self.network.pooled_features(self.preprocess(images))  # [B, 512]
        logits = F.linear(features, self.category_weight(), self.network.fc.bias)  # [B, 365]
        attributes = features @ self.attribute_weight.t()  # [B, 102]
        return torch.cat([torch.softmax(logits, dim=1), attributes], dim=1)  # [B, 467]


def load_places365(
    directory: Path | str, *, clamp_negative_fc_weights: bool = True
) -> Places365Predictor:
    """Build the predictor from the four published Places365 files in `directory` (eval mode).

    Raises `CheckpointError` naming the file for a missing file, a checkpoint that does not fit
    WideResNet-18 (strict: every parameter, nothing extra), a weight array of the wrong shape or
    label files with the wrong number of entries.
    """
    directory = Path(directory)
    missing = [name for name in _FILE_CONTENTS if not (directory / name).is_file()]
    if missing:
        listing = "; ".join(f"{name} ({_FILE_CONTENTS[name]})" for name in missing)
        raise CheckpointError(
            f"Places365 directory {directory} lacks {listing}; put the files of the Places365 "
            f"release (CSAILVision/places365, as HiGAN uses them) in that directory"
        )
    network = WideResNet18()
    path = directory / CHECKPOINT_FILE
    state_dict = as_state_dict(
        read_checkpoint(path, what=_WHAT), path=path, what=_WHAT, key="state_dict"
    )
    state_dict = {name.removeprefix("module."): value for name, value in state_dict.items()}
    # The published file (2017) predates PyTorch 0.4.1's BatchNorm `num_batches_tracked` buffers;
    # torch loads such version-less BatchNorm state too (the counter plays no part in eval mode).
    load_strict(network, state_dict, path=path, what=_WHAT, optional=("*.num_batches_tracked",))
    return Places365Predictor(
        network,
        torch.from_numpy(_read_attribute_weight(directory / ATTRIBUTE_WEIGHT_FILE)),
        _read_category_names(directory / CATEGORY_FILE),
        _read_attribute_names(directory / ATTRIBUTE_FILE),
        clamp_negative_fc_weights=clamp_negative_fc_weights,
    )


def _read_attribute_weight(path: Path) -> np.ndarray:
    """The SUN attribute head as float32 [102, 512], loaded without pickles."""
    try:
        weight = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise CheckpointError(
            f"SUN attribute weights {path} are not a plain .npy array ({error}); "
            f"pass the published {ATTRIBUTE_WEIGHT_FILE}"
        ) from error
    if weight.shape != (NUM_ATTRIBUTES, FEATURE_DIM) or not np.issubdtype(
        weight.dtype, np.floating
    ):
        raise CheckpointError(
            f"SUN attribute weights {path} hold a {weight.dtype} array of shape {weight.shape}, "
            f"expected floats of shape ({NUM_ATTRIBUTES}, {FEATURE_DIM}); "
            f"pass the published {ATTRIBUTE_WEIGHT_FILE}"
        )
    return weight.astype(np.float32)


def _label_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank lines of a label file, stripped, with their 1-based line numbers."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if line.strip()]


def _read_category_names(path: Path) -> list[str]:
    """HiGAN's category names in index order: '/a/airfield 0' -> 'airfield', '/' -> '__'."""
    names: dict[int, str] = {}
    for number, line in _label_lines(path):
        fields = line.split(" ")
        if len(fields) != 2 or not fields[1].isdigit() or len(fields[0]) <= 3:
            raise CheckpointError(
                f"category labels {path} line {number} reads {line!r}, expected "
                f"'/<letter>/<name> <index>'; pass the published {CATEGORY_FILE}"
            )
        index = int(fields[1])
        if index in names:
            raise CheckpointError(f"category labels {path} line {number} repeats index {index}")
        names[index] = fields[0][3:].replace("/", "__")
    if sorted(names) != list(range(NUM_CATEGORIES)):
        raise CheckpointError(
            f"category labels {path} hold {len(names)} entries, expected indices "
            f"0..{NUM_CATEGORIES - 1} once each; pass the published {CATEGORY_FILE}"
        )
    return [names[index] for index in range(NUM_CATEGORIES)]


def _read_attribute_names(path: Path) -> list[str]:
    """HiGAN's attribute names in file order: spaces become underscores."""
    names = [line.replace(" ", "_") for _, line in _label_lines(path)]
    if len(names) != NUM_ATTRIBUTES:
        raise CheckpointError(
            f"attribute labels {path} hold {len(names)} names, expected {NUM_ATTRIBUTES}; "
            f"pass the published {ATTRIBUTE_FILE}"
        )
    return names


def write_random_places365(directory: Path | str, *, seed: int = 0) -> Path:
    """Write the four Places365 files, in the published formats, with random weights.

    For tests and benchmarks (the published files are not shipped). BatchNorm statistics are
    plausible (positive variances), the fc weight has both signs so the clamp matters, and the
    labels are synthetic (``/c/scene_007/indoor 7``, ``attribute 007``). Returns `directory`.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    network = WideResNet18()
    state_dict = {}
    for name, value in network.state_dict().items():
        state_dict[f"module.{name}"] = _random_parameter(name, value, generator)
    checkpoint = {"epoch": 90, "arch": "wideresnet18", "state_dict": state_dict, "best_prec1": 54.0}
    torch.save(checkpoint, directory / CHECKPOINT_FILE)
    weight = 0.05 * torch.randn(NUM_ATTRIBUTES, FEATURE_DIM, generator=generator)
    np.save(directory / ATTRIBUTE_WEIGHT_FILE, weight.numpy())
    categories = [
        f"/{chr(ord('a') + index % 26)}/scene_{index:03d}{'/indoor' if index % 7 == 0 else ''} "
        f"{index}"
        for index in range(NUM_CATEGORIES)
    ]
    (directory / CATEGORY_FILE).write_text("\n".join(categories) + "\n", encoding="utf-8")
    attributes = [f"attribute {index:03d}" for index in range(NUM_ATTRIBUTES)]
    (directory / ATTRIBUTE_FILE).write_text("\n".join(attributes) + "\n", encoding="utf-8")
    return directory


def _random_parameter(name: str, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A plausible random value for one WideResNet-18 state-dict entry."""
    shape = like.shape
    if name.endswith("num_batches_tracked"):
        return torch.tensor(450_000, dtype=like.dtype)
    if like.ndim == 4:  # conv: He init, as the Places365 training code
        fan_out = shape[0] * shape[2] * shape[3]
        return torch.randn(shape, generator=generator) * (2.0 / fan_out) ** 0.5
    if name.startswith("fc."):  # both signs, large enough for peaked probabilities
        return 0.3 * torch.randn(shape, generator=generator)
    if name.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if name.endswith("weight"):  # BN scale; small on bn2 keeps the residual stream bounded
        scale = 0.2 if name.endswith("bn2.weight") else 1.0
        return scale * (0.5 + torch.rand(shape, generator=generator))
    return 0.1 * torch.randn(shape, generator=generator)  # BN bias and running mean
