"""Delta statistics from the per-sample scores of a rescore store.

For boundary m, layer set k and semantic s, over the K_m fresh latents that boundary was moved on:
    gain_i   = max(0, manipulated[i, m, k, s] - original[i, s])
    delta    = mean_i gain_i                      (HiGAN's Delta s)
    stderr   = std_i(gain_i, ddof=1) / sqrt(K_m)
    95% CI   = delta -+ 1.96 * stderr            (normal approximation; or a seeded bootstrap)
Every layer set is evaluated on the same latents, so layers are compared by *paired* differences:
the accumulator keeps, per (boundary, semantic), the co-moment matrix of the gains across layer
sets. Everything is merged chunk by chunk (Chan's parallel update), so memory stays bounded.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from .errors import ScoreError
from .store import ChunkedStore

Z_95 = 1.959963984540054
CSV_COLUMNS = ("boundary", "layer", "semantic", "delta", "stderr", "ci_low", "ci_high", "k")
CiMethod = Literal["normal", "bootstrap"]


class GainAccumulator:
    """Running mean [K, S] and co-moment [S, K, K] of one boundary's gains, merged by chunks."""

    def __init__(self, num_sets: int, num_semantics: int) -> None:
        self.count = 0
        self.mean = np.zeros((num_sets, num_semantics), np.float64)
        self.comoment = np.zeros((num_semantics, num_sets, num_sets), np.float64)

    def add(self, gains: np.ndarray) -> None:
        """Merge a chunk of gains [n, K, S]."""
        n = gains.shape[0]
        if n == 0:
            return
        chunk_mean = gains.mean(axis=0, dtype=np.float64)  # [K, S]
        centred = gains - chunk_mean  # [n, K, S]
        chunk_comoment = np.einsum("nks,njs->skj", centred, centred, dtype=np.float64)
        total = self.count + n
        delta = chunk_mean - self.mean  # [K, S]
        self.comoment += chunk_comoment + np.einsum("ks,js->skj", delta, delta) * (
            self.count * n / total
        )
        self.mean += delta * (n / total)
        self.count = total

    def stderr(self) -> np.ndarray:
        """Standard error of each mean gain, [K, S]."""
        if self.count < 2:
            return np.full_like(self.mean, np.nan)
        variance = np.diagonal(self.comoment, axis1=1, axis2=2).T / (self.count - 1)  # [K, S]
        return np.sqrt(np.maximum(variance, 0.0) / self.count)

    def paired_stderr(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Standard error of mean(gain[a] - gain[b]) per semantic; a, b: layer-set index [S]."""
        if self.count < 2:
            return np.full(a.shape, np.nan)
        s = np.arange(len(a))
        c = self.comoment
        variance = (c[s, a, a] + c[s, b, b] - 2.0 * c[s, a, b]) / (self.count - 1)
        return np.sqrt(np.maximum(variance, 0.0) / self.count)


@dataclass(frozen=True, eq=False)
class DeltaTable:
    """Delta, standard error and 95% CI for every (boundary, layer set, semantic)."""

    boundary_names: tuple[str, ...]
    layer_labels: tuple[str, ...]
    semantic_names: tuple[str, ...]
    delta: np.ndarray = field(repr=False)  # [M, K, S]
    stderr: np.ndarray = field(repr=False)  # [M, K, S]
    ci_low: np.ndarray = field(repr=False)  # [M, K, S]
    ci_high: np.ndarray = field(repr=False)  # [M, K, S]
    counts: np.ndarray = field(repr=False)  # [M] latents per boundary
    ci_method: CiMethod = "normal"
    accumulators: tuple[GainAccumulator, ...] = field(default=(), repr=False)

    @property
    def count(self) -> int:
        """The largest K over boundaries (all equal unless adaptive K stopped some early)."""
        return int(self.counts.max()) if len(self.counts) else 0

    def write_csv(self, path: Path) -> None:
        """`boundary,layer,semantic,delta,stderr,ci_low,ci_high,k`, one row per cell."""
        with open(path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for m, boundary in enumerate(self.boundary_names):
                for k, layer in enumerate(self.layer_labels):
                    if k > 0 and np.isnan(self.delta[m, k]).all():
                        continue  # a layer set never scored (Z boundaries: all layers only)
                    for s, semantic in enumerate(self.semantic_names):
                        writer.writerow(
                            (
                                boundary,
                                layer,
                                semantic,
                                f"{self.delta[m, k, s]:.9g}",
                                f"{self.stderr[m, k, s]:.9g}",
                                f"{self.ci_low[m, k, s]:.9g}",
                                f"{self.ci_high[m, k, s]:.9g}",
                                int(self.counts[m]),
                            )
                        )

    def indistinguishable_layers(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Boundary m: peak layer per semantic [S] and the mask [L, S] of layers whose paired
        difference from the peak is not significant at 95% (the peak itself included)."""
        per_layer = self.delta[m, 1:]  # [L, S]
        peak = np.argmax(per_layer, axis=0)  # [S]
        accumulator = self.accumulators[m]
        mask = np.zeros(per_layer.shape, bool)
        for layer in range(per_layer.shape[0]):
            difference = per_layer[peak, np.arange(per_layer.shape[1])] - per_layer[layer]
            stderr = accumulator.paired_stderr(peak + 1, np.full_like(peak, layer + 1))
            mask[layer] = (difference - Z_95 * stderr <= 0.0) | (layer == peak)
        return peak, mask


def gains(original: np.ndarray, manipulated: np.ndarray) -> np.ndarray:
    """max(0, manipulated - original): [n, S] and [n, M, K, S] -> [n, M, K, S] float32."""
    return np.maximum(manipulated - original[:, None, None, :], 0.0)


def iter_chunk_gains(
    store: ChunkedStore, boundaries: slice = slice(None)
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(chunk, gains [n, M', K, S], active [n, M']) for every completed chunk of a rescore store,
    for the boundaries in `boundaries` (all by default; only their Zarr chunks are read)."""
    manipulated_array, original_array = store.array("manipulated"), store.array("original")
    active_array = store.array("active")
    scored_sets = scored_layer_sets(store.meta, manipulated_array.shape[2])[boundaries]  # [M', K]
    for index in np.flatnonzero(store.completed()):
        start, stop = store.chunk_range(int(index))
        original = original_array[start:stop]  # [n, S]
        manipulated = manipulated_array[start:stop, boundaries]  # [n, M', K, S]
        active = active_array[start:stop, boundaries].astype(bool)  # [n, M']
        scored = active[:, :, None] & scored_sets[None]  # [n, M', K]
        bad = int((~np.isfinite(original)).sum() + (~np.isfinite(manipulated[scored])).sum())
        if bad:
            raise ScoreError(
                f"{store.path} holds {bad} NaN/inf scores in samples {start}..{stop - 1}; "
                f"check the predictor and the boundaries' distance"
            )
        yield int(index), gains(original, manipulated), active


def scored_layer_sets(meta: dict, num_sets: int) -> np.ndarray:
    """bool [M, K]: which layer sets of each boundary were scored (Z boundaries: 'all' only;
    their per-layer rows are NaN)."""
    spaces = meta.get("boundary_spaces") or ["w"] * len(meta["boundary_names"])
    return np.array([[space != "z" or k == 0 for k in range(num_sets)] for space in spaces])


def accumulate(store: ChunkedStore) -> list[GainAccumulator]:
    """One accumulator per boundary over the store's completed chunks."""
    _, num_boundaries, num_sets, num_semantics = store.array("manipulated").shape
    accumulators = [GainAccumulator(num_sets, num_semantics) for _ in range(num_boundaries)]
    for _, chunk_gains, active in iter_chunk_gains(store):
        for m, accumulator in enumerate(accumulators):
            accumulator.add(chunk_gains[active[:, m], m])
    return accumulators


def delta_statistics(
    store: ChunkedStore,
    *,
    accumulators: list[GainAccumulator] | None = None,
    ci_method: CiMethod = "normal",
    resamples: int = 2000,
    seed: int = 0,
) -> DeltaTable:
    """Delta statistics over every completed chunk of a rescore store.

    `accumulators` (one per boundary, as the rescoring run kept them) spare reading the store
    again; without them the store is read chunk by chunk.
    """
    accumulators = accumulators if accumulators is not None else accumulate(store)
    counts = np.array([a.count for a in accumulators])
    if counts.max(initial=0) == 0:
        raise ScoreError(f"{store.path} has no completed chunks; run `rescore rescore` first")
    delta = np.stack([a.mean for a in accumulators])  # [M, K, S]
    stderr = np.stack([a.stderr() for a in accumulators])
    if ci_method == "normal":
        low, high = delta - Z_95 * stderr, delta + Z_95 * stderr
    elif ci_method == "bootstrap":
        low, high = bootstrap_intervals(store, resamples=resamples, seed=seed)
    else:
        raise ValueError(f"unknown CI method '{ci_method}'; use normal or bootstrap")
    return DeltaTable(
        boundary_names=tuple(store.meta["boundary_names"]),
        layer_labels=tuple(store.meta["layer_labels"]),
        semantic_names=tuple(store.meta["semantic_names"]),
        delta=delta,
        stderr=stderr,
        ci_low=low,
        ci_high=high,
        counts=counts,
        ci_method=ci_method,
        accumulators=tuple(accumulators),
    )


def bootstrap_intervals(
    store: ChunkedStore, *, resamples: int = 2000, seed: int = 0, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CI of every Delta, [M, K, S] each; deterministic for a given seed.

    Resampling latents with replacement is the same as weighting them by multinomial counts, so
    each boundary's B resampled means are one matrix product counts [B, n] @ gains [n, K*S] / n.
    One boundary's gains are held in memory at a time.
    """
    _, num_boundaries, num_sets, num_semantics = store.array("manipulated").shape
    low = np.full((num_boundaries, num_sets, num_semantics), np.nan)
    high = np.full_like(low, np.nan)
    for m in range(num_boundaries):
        parts = [g[a[:, 0], 0] for _, g, a in iter_chunk_gains(store, slice(m, m + 1))]
        boundary_gains = np.concatenate(parts).reshape(-1, num_sets * num_semantics)  # [n, K*S]
        if len(boundary_gains) < 2:
            continue
        bounds = bootstrap_ci(
            boundary_gains, resamples, np.random.default_rng([seed, m]), confidence
        )
        low[m], high[m] = (b.reshape(num_sets, num_semantics) for b in bounds)
    return low, high


def bootstrap_ci(
    samples: np.ndarray, resamples: int, rng: np.random.Generator, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of the mean of each column of samples [n, C] -> ([C], [C])."""
    n = len(samples)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)  # [B, n]
    means = counts.astype(np.float32) @ samples.astype(np.float32) / n  # [B, C]
    tail = (1.0 - confidence) / 2.0
    return np.quantile(means, tail, axis=0), np.quantile(means, 1.0 - tail, axis=0)


def half_widths(accumulator: GainAccumulator) -> np.ndarray:
    """95% CI half-width of each mean gain, [K, S] (normal approximation)."""
    return Z_95 * accumulator.stderr()
