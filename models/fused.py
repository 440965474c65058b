"""The fused scoring pass as one module: layer-wise codes in, scores out; images stay inside.

    wp [B, L, D] -> generator.synthesize -> images [B, 3, H, W] -> every predictor -> scores [B, S]

This is what every backend runs (torch eager directly; ONNX / TensorRT after export).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch import nn

from .base import Generator, Predictor
from .errors import RescoreError


class ScoringPass(nn.Module):
    """Composition of one generator and one or more predictors (no weights of its own)."""

    def __init__(self, generator: Generator, predictors: Sequence[Predictor]) -> None:
        super().__init__()
        if not predictors:
            raise RescoreError("a scoring pass needs at least one predictor; pass --predictor NAME")
        self.generator = generator
        self.predictors = nn.ModuleList(predictors)
        names = tuple(name for p in predictors for name in p.semantic_names)
        clashes = sorted(name for name, count in Counter(names).items() if count > 1)
        if clashes:
            raise RescoreError(
                f"predictors report the same semantic name(s) {', '.join(clashes[:5])}; "
                f"use predictors whose semantic names are distinct"
            )
        self.semantic_names: tuple[str, ...] = names

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        """wp [B, L, D] -> scores [B, S] (float32)."""
        images = self.generator.synthesize(wp)  # [B, 3, H, W]
        return torch.cat([predictor(images).float() for predictor in self.predictors], dim=1)
