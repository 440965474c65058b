"""The models the benchmarks score, and the measurements they share.

stylegan_places(directory, resolution)   StyleGAN + Places365, random weights written and read
                                         back in the published file formats
synthetic_scene(resolution)              the synthetic scene model and its pixel predictor
workload(label, generator, predictors)   any models: seeded truncated codes and FLOPs per image
flops_per_image(pass, codes)             counted by torch.utils.flop_counter (2 per FMA)
images_per_second(session, wp, batch)    warm-up, then one timed pass over wp
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from rescore.engine.latents import Stream, latent_block
from rescore.engine.scoring import map_latents, score_codes
from rescore.export.session import TorchSession
from rescore.models.fused import ScoringPass
from rescore.models.places365 import load_places365, write_random_places365
from rescore.models.stylegan import load_stylegan, save_random_stylegan
from rescore.models.synthetic import build_synthetic, build_synthetic_predictor


@dataclass(frozen=True, eq=False)
class Workload:
    """A generator, its predictors and seeded codes to score, with their FLOPs per image."""

    label: str
    generator: torch.nn.Module
    predictors: list[torch.nn.Module]
    wp: np.ndarray  # [N, L, D] float32, truncated
    flops: float  # per scored image


def stylegan_places(directory: Path, resolution: int = 256, images: int = 8) -> Workload:
    """StyleGAN-`resolution` + Places365 with seeded random weights in the published formats."""
    generator = load_stylegan(
        save_random_stylegan(Path(directory) / "g.pth", resolution=resolution)
    )
    predictor = load_places365(write_random_places365(Path(directory) / "places365"))
    return workload(f"StyleGAN-{resolution} + Places365", generator, [predictor], images)


def synthetic_scene(resolution: int = 64, images: int = 64) -> Workload:
    """The synthetic scene generator and its pixel predictor (weightless measurements)."""
    generator = build_synthetic(resolution=resolution)
    return workload(f"synthetic {resolution}px", generator, [build_synthetic_predictor()], images)


def flops_per_image(scoring_pass: ScoringPass, codes: torch.Tensor) -> float:
    """FLOPs of one image through the fused pass, counted by torch (2 per multiply-add)."""
    counter = FlopCounterMode(display=False)
    # the counter's module tracker hooks tensors that require grad; a view of a parameter made
    # under no_grad (StyleGAN2's constant input) has no grad function and breaks it
    trainable = [p for p in scoring_pass.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        with counter, torch.no_grad():
            scoring_pass(codes[:1])
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)
    return float(counter.get_total_flops())


def images_per_second(session, wp: np.ndarray, batch_size: int) -> tuple[float, np.ndarray]:
    """Warm up at `batch_size`, then time scoring all of `wp`: (images/s, scores)."""
    score_codes(session, wp[:batch_size], batch_size)
    start = time.perf_counter()
    scores = score_codes(session, wp, batch_size)
    return len(wp) / (time.perf_counter() - start), scores


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected| (the tests' norm-wise parity measure)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12))


def workload(label: str, generator, predictors, images: int) -> Workload:
    """`images` seeded truncated codes of `generator`, and the FLOPs of one image in the pass."""
    reference = TorchSession(generator, predictors, "cpu")
    geometry = reference.geometry
    z = latent_block(0, Stream.SAMPLE, 0, images, geometry.z_dim)
    wp = geometry.truncate(map_latents(reference, z, 8))  # [N, L, D]
    flops = flops_per_image(reference.scoring_pass, torch.from_numpy(wp))
    return Workload(label, generator, predictors, wp, flops)
