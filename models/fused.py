"""The fused scoring pass as one module: layer-wise codes in, scores out; images stay inside.

    wp [B, L, D] -> generator.synthesize -> images [B, 3, H, W] -> every predictor -> scores [B, S]

A predictor with `reads_features` (layer indices; LinearGAN's `LinearSemanticPredictor`) is given
`generator.features(wp, layers)` instead of images; when every predictor reads features, no image
is synthesized at all. This is what every backend runs (torch eager; ONNX / TensorRT after export).
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
        readers = [tuple(getattr(p, "reads_features", None) or ()) for p in predictors]
        self._feature_layers = sorted({layer for layers in readers for layer in layers})
        self._reads: list[tuple[int, ...]] = readers
        if self._feature_layers and not hasattr(generator, "features"):
            raise RescoreError(
                "a predictor reads generator features but the generator has no features(wp, "
                "layers) method; use a pixel predictor with this generator"
            )

    def forward(self, wp: torch.Tensor) -> torch.Tensor:
        """wp [B, L, D] -> scores [B, S] (float32)."""
        images = None
        if not all(self._reads):
            images = self.generator.synthesize(wp)  # [B, 3, H, W]
        if self._feature_layers:
            maps = self.generator.features(wp, self._feature_layers)
            by_layer = dict(zip(self._feature_layers, maps, strict=True))
        scores = []
        for predictor, reads in zip(self.predictors, self._reads, strict=True):
            inputs = [by_layer[layer] for layer in reads] if reads else images
            scores.append(predictor(inputs).float())
        return torch.cat(scores, dim=1)
