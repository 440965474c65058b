"""Broken user plug-ins (`bad_plugins:factory`) for the bad-input table: each fails one way."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from toy_models import ToyGenerator, ToyPredictor

from rescore.models.registry import GeneratorOptions


def returns_none(path: Path | None, options: GeneratorOptions | None = None) -> None:
    return None


def returns_text(path: Path | None, options: GeneratorOptions | None = None) -> str:
    return "not a module"


def raises(path: Path | None, options: GeneratorOptions | None = None) -> nn.Module:
    raise ValueError("weights not where the factory expected them")


class WrongShapePredictor(ToyPredictor):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return super().forward(images)[:, :2]  # 2 columns for 4 semantic names


class RaisingPredictor(ToyPredictor):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")


class NanColumnPredictor(ToyPredictor):
    """'blue' is NaN for every image (a broken head); the other columns are fine."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = super().forward(images)
        scores[:, 2] = torch.nan
        return scores


class WrongShapeGenerator(ToyGenerator):
    def map(self, z: torch.Tensor) -> torch.Tensor:
        return super().map(z)[:, :3]


def wrong_shape_predictor(path: Path | None) -> nn.Module:
    return WrongShapePredictor()


def raising_predictor(path: Path | None) -> nn.Module:
    return RaisingPredictor()


def nan_column_predictor(path: Path | None) -> nn.Module:
    return NanColumnPredictor()


def wrong_shape_generator(path: Path | None, options: GeneratorOptions) -> nn.Module:
    return WrongShapeGenerator(seed=options.seed)
