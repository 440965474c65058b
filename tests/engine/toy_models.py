"""Tiny seeded models for engine tests, plugged in the way users plug theirs: `toy_models:factory`.

The toy generator paints 8x8 images whose channel means are linear in chosen layers' codes, so
the expected direction and peak layer of each toy semantic are known.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from rescore.models.base import truncate
from rescore.models.registry import GeneratorOptions

Z_DIM = W_DIM = 6
NUM_LAYERS = 4


class ToyGenerator(nn.Module):
    """z -> w (fixed linear map + tanh) -> wp -> 8x8 image; channel c reads layer c's code."""

    z_dim, w_dim, num_layers, resolution = Z_DIM, W_DIM, NUM_LAYERS, 8

    def __init__(self, seed: int = 0, psi: float = 0.7, truncation_layers: int = 2) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("mapping_weight", torch.randn(W_DIM, Z_DIM, generator=g) / Z_DIM**0.5)
        self.register_buffer("w_avg", torch.zeros(W_DIM))
        coefficients = torch.ones(NUM_LAYERS)
        coefficients[:truncation_layers] = psi
        self.register_buffer("coefficients", coefficients)
        self.register_buffer("readout", torch.eye(W_DIM)[:3])  # channel c reads w dim c

    def map(self, z: torch.Tensor) -> torch.Tensor:
        return torch.tanh(z @ self.mapping_weight.T) * 2.0

    def truncation_coefficients(self) -> torch.Tensor:
        return self.coefficients

    def average_w(self) -> torch.Tensor:
        return self.w_avg

    def synthesize(self, wp: torch.Tensor) -> torch.Tensor:
        # channel c = readout_c . wp[:, c]  (layer c drives channel c), constant over pixels
        values = torch.einsum("bcd,cd->bc", wp[:, :3], self.readout)  # [B, 3]
        return torch.tanh(values)[:, :, None, None].expand(-1, 3, 8, 8).contiguous()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesize(truncate(self.map(z), self.w_avg, self.coefficients))


class ToyPredictor(nn.Module):
    """Scores: the mean of each channel (semantic 'red' peaks at layer 0, 'green' at 1, ...)."""

    semantic_names = ("red", "green", "blue", "constant")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        means = images.mean(dim=(2, 3))  # [B, 3]
        return torch.cat([means, torch.zeros_like(means[:, :1])], dim=1)


def build_toy_generator(path: Path | None, options: GeneratorOptions) -> nn.Module:
    return ToyGenerator(seed=options.seed)


def build_toy_predictor(path: Path | None) -> nn.Module:
    return ToyPredictor()


class NanPredictor(ToyPredictor):
    """Like ToyPredictor, but 'red' is NaN wherever the red channel is negative."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = super().forward(images)
        scores[:, 0] = torch.where(scores[:, 0] < 0, torch.nan, scores[:, 0])
        return scores


def build_nan_predictor(path: Path | None) -> nn.Module:
    return NanPredictor()


class KillerPredictor(ToyPredictor):
    """Like ToyPredictor, but the first process to score its 3rd batch dies on the spot (once per
    test session: a marker file in $RESCORE_TEST_MARKERS records it), as a crashed worker would."""

    calls = 0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        KillerPredictor.calls += 1
        marker = Path(os.environ.get("RESCORE_TEST_MARKERS", "/nonexistent")) / "killed"
        if KillerPredictor.calls == 3 and marker.parent.is_dir() and not marker.exists():
            marker.write_text(str(os.getpid()))
            os._exit(1)
        return super().forward(images)


def build_killer_predictor(path: Path | None) -> nn.Module:
    return KillerPredictor()


class BoundedToyPredictor(ToyPredictor):
    """ToyPredictor declaring its true range: channel means of tanh images lie in [-1, 1]."""

    score_range = (-1.0, 1.0)


def build_bounded_toy_predictor(path: Path | None) -> nn.Module:
    return BoundedToyPredictor()
