"""The fused scoring pass as one module: layer-wise codes in, scores out; images stay inside.

    wp [B, L, D] -> generator.synthesize -> images [B, 3, H, W] -> every predictor -> scores [B, S]

A predictor with `reads_features` (layer indices; LinearGAN's `LinearSemanticPredictor`) is given
`generator.features(wp, layers)` instead of images; when every predictor reads features, no image
is synthesized at all. This is what every backend runs (torch eager; ONNX / TensorRT after export).

Score ranges: a predictor may declare `score_range = (lo, hi)` (every semantic) or
`score_ranges` (one `(lo, hi)` or None per semantic; wins over `score_range`). A declared range
must be a hard bound of the scores: the statistics then use finite-sample intervals for bounded
gains (`rescore.engine.intervals`). Undeclared: None (normal intervals, flagged when unreliable).
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
        self.semantic_ranges: tuple[tuple[float, float] | None, ...] = tuple(
            r for p in predictors for r in predictor_ranges(p)
        )
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

    @property
    def reads_images_only(self) -> bool:
        """Whether every predictor reads images (none reads generator features)."""
        return not self._feature_layers

    def score_images(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] -> scores [B, S] (float32), when `reads_images_only`: what forward
        does after synthesis (prefix reuse synthesizes the images itself)."""
        return torch.cat([predictor(images).float() for predictor in self.predictors], dim=1)


def predictor_ranges(predictor: Predictor) -> tuple[tuple[float, float] | None, ...]:
    """The declared score range of each of a predictor's semantics (None: not declared)."""
    names = tuple(predictor.semantic_names)
    per_semantic = getattr(predictor, "score_ranges", None)
    if per_semantic is None:
        per_semantic = (getattr(predictor, "score_range", None),) * len(names)
    if len(per_semantic) != len(names):
        raise RescoreError(
            f"{type(predictor).__name__}.score_ranges has {len(per_semantic)} entries for "
            f"{len(names)} semantics; give one (lo, hi) or None per semantic"
        )
    ranges = []
    for name, declared in zip(names, per_semantic, strict=True):
        if declared is None:
            ranges.append(None)
            continue
        low, high = (float(v) for v in declared)
        if not low < high:
            raise RescoreError(
                f"score range of '{name}' is ({low}, {high}); declare (lo, hi) with lo < hi"
            )
        ranges.append((low, high))
    return tuple(ranges)
