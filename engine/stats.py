"""Delta statistics from the per-sample scores of a rescore store.

For boundary m, layer set k and semantic s, over the K fresh latents:
    gain_i   = max(0, manipulated[i, m, k, s] - original[i, s])
    delta    = mean_i gain_i                      (HiGAN's Delta s)
    stderr   = std_i(gain_i, ddof=1) / sqrt(K)
    95% CI   = delta -+ 1.96 * stderr            (normal approximation)
Accumulated chunk by chunk (Chan's parallel mean/variance merge), so memory stays bounded.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ScoreError
from .store import ChunkedStore

Z_95 = 1.959963984540054
CSV_COLUMNS = ("boundary", "layer", "semantic", "delta", "stderr", "ci_low", "ci_high", "k")


@dataclass(frozen=True, eq=False)
class DeltaTable:
    """Delta, its standard error and 95% CI for every (boundary, layer set, semantic)."""

    boundary_names: tuple[str, ...]
    layer_labels: tuple[str, ...]
    semantic_names: tuple[str, ...]
    delta: np.ndarray = field(repr=False)  # [M, K, S] float64
    stderr: np.ndarray = field(repr=False)  # [M, K, S]
    count: int = 0

    @property
    def ci_low(self) -> np.ndarray:
        return self.delta - Z_95 * self.stderr

    @property
    def ci_high(self) -> np.ndarray:
        return self.delta + Z_95 * self.stderr

    def write_csv(self, path: Path) -> None:
        """`boundary,layer,semantic,delta,stderr,ci_low,ci_high,k`, one row per cell."""
        low, high = self.ci_low, self.ci_high
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for m, boundary in enumerate(self.boundary_names):
                for k, layer in enumerate(self.layer_labels):
                    for s, semantic in enumerate(self.semantic_names):
                        writer.writerow((
                            boundary, layer, semantic, f"{self.delta[m, k, s]:.9g}",
                            f"{self.stderr[m, k, s]:.9g}", f"{low[m, k, s]:.9g}",
                            f"{high[m, k, s]:.9g}", self.count,
                        ))


class GainAccumulator:
    """Running mean and sum of squared deviations of the gains, merged chunk by chunk."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.count = 0
        self.mean = np.zeros(shape, np.float64)
        self.m2 = np.zeros(shape, np.float64)

    def add(self, gains: np.ndarray) -> None:
        """Merge a chunk of gains [n, *shape]."""
        n = gains.shape[0]
        if n == 0:
            return
        chunk_mean = gains.mean(axis=0, dtype=np.float64)
        chunk_m2 = ((gains - chunk_mean) ** 2).sum(axis=0, dtype=np.float64)
        total = self.count + n
        delta = chunk_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + chunk_m2 + delta**2 * (self.count * n / total)
        self.count = total

    def stderr(self) -> np.ndarray:
        if self.count < 2:
            return np.full_like(self.mean, np.nan)
        return np.sqrt(self.m2 / (self.count - 1) / self.count)


def gains(original: np.ndarray, manipulated: np.ndarray) -> np.ndarray:
    """max(0, manipulated - original): [n, S] and [n, M, K, S] -> [n, M, K, S] float32."""
    return np.maximum(manipulated - original[:, None, None, :], 0.0)


def delta_statistics(store: ChunkedStore) -> DeltaTable:
    """Delta statistics over every completed chunk of a rescore store."""
    manipulated_array = store.array("manipulated")
    original_array = store.array("original")
    accumulator = GainAccumulator(manipulated_array.shape[1:])
    for index in np.flatnonzero(store.completed()):
        start, stop = store.chunk_range(int(index))
        original = original_array[start:stop]  # [n, S]
        manipulated = manipulated_array[start:stop]  # [n, M, K, S]
        bad = int((~np.isfinite(original)).sum() + (~np.isfinite(manipulated)).sum())
        if bad:
            raise ScoreError(
                f"{store.path} holds {bad} NaN/inf scores in samples {start}..{stop - 1}; "
                f"check the predictor and the boundaries' distance"
            )
        accumulator.add(gains(original, manipulated))
    if accumulator.count == 0:
        raise ScoreError(f"{store.path} has no completed chunks; run `rescore rescore` first")
    return DeltaTable(
        boundary_names=tuple(store.meta["boundary_names"]),
        layer_labels=tuple(store.meta["layer_labels"]),
        semantic_names=tuple(store.meta["semantic_names"]),
        delta=accumulator.mean,
        stderr=accumulator.stderr(),
        count=accumulator.count,
    )
