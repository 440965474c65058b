"""Delta statistics from the per-sample scores of a rescore store.

For boundary m, layer set k and semantic s, over the K_m fresh latents that boundary was moved on:
    gain_i   = max(0, manipulated[i, m, k, s] - original[i, s])      in [0, R] if the range is known
    delta    = mean_i gain_i                      (HiGAN's Delta s)
    stderr   = std_i(gain_i, ddof=1) / sqrt(K_m)
    95% CI   = see `intervals`: empirical-Bernstein where the semantic's score range is declared,
               else normal (flagged `few_nonzero` below MIN_NONZERO non-zero gains); under
               adaptive K the confidence sequence the stopping rule saw; or a seeded bootstrap.
Every layer set is evaluated on the same latents, so layers are compared by *paired* differences:
the accumulator keeps, per (boundary, semantic), the co-moment matrix of the gains across layer
sets (see `peaks` for the simultaneous peak-layer sets). Everything is merged chunk by chunk
(Chan's parallel update), so memory stays bounded.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .elimination import (
    EliminationSpec,
    Eliminator,
    SetSequences,
    interest_columns,
)
from .errors import ScoreError
from .intervals import (
    MIN_NONZERO,
    ConfidenceSequence,
    bernstein_interval,
    normal_interval,
)
from .intervals import Z_95 as Z_95  # re-exported: the normal interval's z
from .peaks import peak_sets, tie_tolerance
from .store import ChunkedStore

CSV_COLUMNS = (
    "boundary",
    "layer",
    "semantic",
    "delta",
    "stderr",
    "ci_low",
    "ci_high",
    "k",
    "ci_method",
    "flags",
)
CiMethod = Literal["auto", "normal", "bootstrap"]
CI_METHODS: tuple[str, ...] = ("auto", "normal", "bootstrap")
_RANGE_SLACK = 1e-6  # relative: float32 scores may overshoot a declared bound by rounding


class GainAccumulator:
    """Running mean [K, S], co-moment [S, K, K], non-zero count and maximum of one boundary's
    gains, merged by chunks."""

    def __init__(self, num_sets: int, num_semantics: int) -> None:
        self.count = 0
        self.mean = np.zeros((num_sets, num_semantics), np.float64)
        self.comoment = np.zeros((num_semantics, num_sets, num_sets), np.float64)
        self.nonzero = np.zeros((num_sets, num_semantics), np.int64)
        self.maximum = np.zeros((num_sets, num_semantics), np.float64)
        self.set_counts = np.zeros(num_sets, np.int64)  # K of each layer set
        self._pairs: tuple[np.ndarray, np.ndarray] | None = None  # masked: see `add`

    def add(self, gains: np.ndarray, moved: np.ndarray | None = None) -> None:
        """Merge a chunk of gains [n, K, S]. `moved` [n, K] bool (elimination: each layer set
        on its own latents, NaN gains elsewhere): each cell's mean and variance over its own
        latents, each co-moment over the latents both sets share."""
        n = gains.shape[0]
        if n == 0:
            return
        if moved is not None:
            self._add_masked(gains, np.asarray(moved, bool))
            return
        self.set_counts += n
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
        self.nonzero += (gains > 0).sum(axis=0)
        self.maximum = np.maximum(self.maximum, gains.max(axis=0))

    def _add_masked(self, gains: np.ndarray, moved: np.ndarray) -> None:
        """Chan's update per pair of layer sets, over the latents both moved on."""
        num_sets, num_semantics = self.mean.shape
        if self._pairs is None:
            self._pairs = (
                np.zeros((num_sets, num_sets)),  # latents shared by sets j and l
                np.zeros((num_semantics, num_sets, num_sets)),  # mean of j over them
            )
        shared, pair_mean = self._pairs
        weight = moved.astype(np.float64)  # [n, K]
        values = np.where(moved[..., None], gains, 0.0).astype(np.float64)  # [n, K, S]
        chunk_shared = weight.T @ weight  # [K, K]
        with np.errstate(invalid="ignore", divide="ignore"):
            sums = np.einsum("ijs,il->sjl", values, weight)  # [S, j, l]
            chunk_mean = np.nan_to_num(sums / chunk_shared)
            products = np.einsum("ijs,ils->sjl", values, values)
            chunk_comoment = products - chunk_shared * chunk_mean * chunk_mean.transpose(0, 2, 1)
            total = shared + chunk_shared
            share = np.nan_to_num(chunk_shared / total)
        delta = chunk_mean - pair_mean  # [S, j, l]
        self.comoment += chunk_comoment + delta * delta.transpose(0, 2, 1) * shared * share
        pair_mean += delta * share
        shared += chunk_shared
        self.mean = np.diagonal(pair_mean, axis1=1, axis2=2).T.copy()  # [K, S]
        self.set_counts = np.diagonal(shared).astype(np.int64)
        self.count += len(gains)
        self.nonzero += (values > 0).sum(axis=0)
        self.maximum = np.maximum(self.maximum, values.max(axis=0))

    def variance(self) -> np.ndarray:
        """Sample variance (ddof=1) of each gain, [K, S] (NaN below 2 latents)."""
        counts = self.set_counts[:, None].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            variance = np.diagonal(self.comoment, axis1=1, axis2=2).T / (counts - 1)  # [K, S]
        return np.where(counts >= 2, np.maximum(variance, 0.0), np.nan)

    def stderr(self) -> np.ndarray:
        """Standard error of each mean gain over its own latents, [K, S]."""
        return np.sqrt(self.variance() / np.maximum(self.set_counts[:, None], 1))

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
    """Delta, standard error, 95% CI, CI method and flags for every (boundary, layer set,
    semantic); per semantic its range, score spread and tie tolerance."""

    boundary_names: tuple[str, ...]
    layer_labels: tuple[str, ...]
    semantic_names: tuple[str, ...]
    delta: np.ndarray = field(repr=False)  # [M, K, S]
    stderr: np.ndarray = field(repr=False)  # [M, K, S]
    ci_low: np.ndarray = field(repr=False)  # [M, K, S]; NaN where flagged few_nonzero
    ci_high: np.ndarray = field(repr=False)  # [M, K, S]
    counts: np.ndarray = field(repr=False)  # [M] latents per boundary
    ci_method: str = "auto"  # what the run asked for
    methods: np.ndarray = field(default=None, repr=False)  # [M, K, S] str: what each cell got
    flags: np.ndarray = field(default=None, repr=False)  # [M, K, S] str, ';'-joined
    no_effect: np.ndarray = field(default=None, repr=False)  # [M, K, S] bool
    ranges: np.ndarray = field(default=None, repr=False)  # [S] R = hi - lo, NaN unknown
    spread: np.ndarray = field(default=None, repr=False)  # [S] std of the original scores
    tie_tolerance: np.ndarray = field(default=None, repr=False)  # [S]
    ci_params: dict = field(default_factory=dict)  # resamples, seed, confidence, ...
    accumulators: tuple[GainAccumulator, ...] = field(default=(), repr=False)
    set_counts: np.ndarray = field(default=None, repr=False)  # [M, K] latents per layer set
    # elimination: [M, L, S] the layers it did not eliminate (its certified peak sets), and
    # [M, S] which (boundary, semantic) pairs it certified; None for other runs
    certified: np.ndarray | None = field(default=None, repr=False)
    certified_by: np.ndarray | None = field(default=None, repr=False)

    @property
    def count(self) -> int:
        """The largest K over boundaries (all equal unless adaptive K stopped some early)."""
        return int(self.counts.max()) if len(self.counts) else 0

    def write_csv(self, path: Path) -> None:
        """One row per cell, columns `CSV_COLUMNS`."""
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
                                int(self.set_counts[m, k]),
                                self.methods[m, k, s],
                                self.flags[m, k, s],
                            )
                        )

    def peak_layers(self, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boundary m: peak layer [S], the simultaneous 95% peak set [L, S] (see `peaks`) and
        whether the semantic is ranked at all [S] (False: no layer's Delta is distinguishable
        from 0, reported as "no effect")."""
        accumulator = self.accumulators[m]
        peak, mask = peak_sets(
            self.delta[m, 1:],
            accumulator.comoment[:, 1:, 1:],
            accumulator.count,
            self.tie_tolerance,
        )
        if self.certified is not None:  # elimination: its survivors; uncertified: every layer
            mask = np.where(self.certified_by[m][None], self.certified[m], True)
            values = np.where(mask, self.delta[m, 1:], -np.inf)  # [L, S]
            with np.errstate(invalid="ignore"):
                top = np.max(np.nan_to_num(values, nan=-np.inf), axis=0)
                peak = np.argmax(mask & (values >= top - self.tie_tolerance), axis=0)
        ranked = ~self.no_effect[m, 1:].all(axis=0)
        return peak, mask, ranked

    def indistinguishable_layers(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Boundary m: peak layer [S] and its simultaneous 95% peak set [L, S]."""
        peak, mask, _ = self.peak_layers(m)
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
    eliminating = is_elimination(store)
    for index in np.flatnonzero(store.completed()):
        start, stop = store.chunk_range(int(index))
        original = original_array[start:stop]  # [n, S]
        manipulated = manipulated_array[start:stop, boundaries]  # [n, M', K, S]
        active = active_array[start:stop, boundaries].astype(bool)  # [n, M']
        scored = active[:, :, None] & scored_sets[None]  # [n, M', K]
        if eliminating:  # each layer set stopped on its own
            scored &= store.array("moved")[start:stop, boundaries].astype(bool)
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
    layer_wise = meta.get("layer_wise", True)  # False: a generator without layer-wise codes
    return np.array(
        [[(space != "z" and layer_wise) or k == 0 for k in range(num_sets)] for space in spaces]
    )


def score_ranges(store: ChunkedStore) -> np.ndarray:
    """Width R = hi - lo of each semantic's declared score range, [S] (NaN: none declared)."""
    recorded = store.meta.get("semantic_ranges") or [None] * len(store.meta["semantic_names"])
    return np.array([np.nan if r is None else float(r[1]) - float(r[0]) for r in recorded])


def sequences_for(store: ChunkedStore) -> list[ConfidenceSequence] | None:
    """Empty confidence sequences, one per boundary, when the store was made with adaptive K or
    any semantic has a declared range (the betting lower bound lives in them); else None.
    Elimination stores get one sequence per layer set (`SetSequences`: unequal K)."""
    identity = store.meta["identity"]
    ranges = score_ranges(store)
    if not identity.get("target") and not np.isfinite(ranges).any():
        return None
    _, num_boundaries, num_sets, _ = store.array("manipulated").shape
    horizon = int(identity["num_latents"])
    if is_elimination(store):
        return [SetSequences(num_sets, ranges, horizon) for _ in range(num_boundaries)]
    return [ConfidenceSequence(num_sets, ranges, horizon) for _ in range(num_boundaries)]


def is_elimination(store: ChunkedStore) -> bool:
    """Whether the store was written with successive elimination (`moved` array, unequal K)."""
    return bool(store.meta["identity"].get("eliminate"))


def moved_sets(store: ChunkedStore, start: int, stop: int) -> np.ndarray | None:
    """[n, M, K] bool: which layer sets were moved on samples [start, stop) of an elimination
    store (None for other stores: every scored set of an active boundary was)."""
    if not is_elimination(store):
        return None
    return store.array("moved")[start:stop].astype(bool)


def accumulate(
    store: ChunkedStore,
    on_chunk: Callable[[np.ndarray, np.ndarray], None] | None = None,
) -> tuple[list[GainAccumulator], list[ConfidenceSequence] | None]:
    """One accumulator (and, for adaptive stores, one confidence sequence) per boundary over the
    store's completed chunks, in sample order. `on_chunk(gains [n, M, K, S], active [n, M])` sees
    every chunk too, in the same pass (e.g. an elimination replaying its decisions)."""
    _, num_boundaries, num_sets, num_semantics = store.array("manipulated").shape
    accumulators = [GainAccumulator(num_sets, num_semantics) for _ in range(num_boundaries)]
    sequences = sequences_for(store)
    for index, chunk_gains, active in iter_chunk_gains(store):
        if on_chunk is not None:
            on_chunk(chunk_gains, active)
        moved = moved_sets(store, *store.chunk_range(index))
        for m, accumulator in enumerate(accumulators):
            rows = chunk_gains[active[:, m], m]
            if moved is not None:
                sets = moved[active[:, m], m]
                accumulator.add(rows, sets)
                if sequences is not None:
                    sequences[m].add(rows, sets)
                continue
            accumulator.add(rows)
            if sequences is not None and len(rows):
                sequences[m].commit(sequences[m].extend(rows), len(rows))
    return accumulators, sequences


def score_spread(store: ChunkedStore) -> np.ndarray:
    """Standard deviation of each semantic's original scores over the stored latents, [S]."""
    original = store.array("original")
    rows = [original[slice(*store.chunk_range(int(c)))] for c in np.flatnonzero(store.completed())]
    values = np.concatenate(rows).astype(np.float64)
    values = values[np.isfinite(values).all(axis=1)]
    return values.std(axis=0, ddof=1) if len(values) > 1 else np.full(values.shape[1], np.nan)


def delta_statistics(
    store: ChunkedStore,
    *,
    accumulators: list[GainAccumulator] | None = None,
    sequences: list[ConfidenceSequence] | None = None,
    ci_method: CiMethod | None = None,
    resamples: int | None = None,
    seed: int | None = None,
) -> DeltaTable:
    """Delta statistics over every completed chunk of a rescore store.

    `accumulators` (and `sequences`, one per boundary, as the rescoring run kept them) spare
    reading the store again. `ci_method`, `resamples` and `seed` default to what the store's
    `finished` record says the run asked for (so `rescore report` keeps a bootstrap run's
    intervals), else auto / 2000 / the store's seed.
    """
    recorded = (store.meta.get("finished") or {}).get("ci") or {}
    ci_method = ci_method or recorded.get("method", "auto")
    resamples = resamples or int(recorded.get("resamples", 2000))
    seed = seed if seed is not None else int(recorded.get("seed", store.meta["identity"]["seed"]))
    if ci_method not in CI_METHODS:
        raise ScoreError(f"unknown CI method '{ci_method}'; use {', '.join(CI_METHODS)}")
    if accumulators is None:
        accumulators, sequences = accumulate(store)
    adaptive = bool(store.meta["identity"].get("target"))
    if adaptive and ci_method != "auto":
        raise ScoreError(
            f"--ci {ci_method} cannot report an adaptive-K run (its stopping rule saw confidence "
            f"sequences); use --ci auto"
        )
    eliminating = is_elimination(store)
    if eliminating and ci_method == "bootstrap":
        raise ScoreError(
            "--ci bootstrap cannot report an elimination run (its layer sets have unequal K); "
            "use --ci auto or normal"
        )
    if sequences is None and (adaptive or np.isfinite(score_ranges(store)).any()):
        sequences = accumulate(store)[1]
    counts = np.array([a.count for a in accumulators])
    set_counts = np.stack([a.set_counts for a in accumulators])  # [M, K]
    if counts.max(initial=0) == 0:
        raise ScoreError(f"{store.path} has no completed chunks; run `rescore rescore` first")
    ranges = score_ranges(store)  # [S]
    delta = np.stack([a.mean for a in accumulators])  # [M, K, S]
    delta = np.where(set_counts[:, :, None] > 0, delta, np.nan)  # never-moved sets: no Delta
    stderr = np.stack([a.stderr() for a in accumulators])
    nonzero = np.stack([a.nonzero for a in accumulators])
    maximum = np.stack([a.maximum for a in accumulators])
    violated = maximum > ranges * (1.0 + _RANGE_SLACK)  # NaN ranges compare False
    bounded = np.isfinite(ranges) & ~violated  # [M, K, S]
    if adaptive:
        pairs = [q.interval(b) for q, b in zip(sequences, bounded, strict=True)]
        low, high = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        methods = np.where(bounded, "cs_bernstein", "cs_normal")
    elif ci_method == "bootstrap":
        low, high = bootstrap_intervals(store, resamples=resamples, seed=seed)
        methods = np.full(delta.shape, "bootstrap")
    else:
        low, high = normal_interval(delta, stderr)
        methods = np.full(delta.shape, "normal", dtype=object)
        if ci_method == "auto" and sequences is not None:
            variance = np.stack([a.variance() for a in accumulators])
            width = np.nan_to_num(ranges, nan=1.0)
            _, b_high = bernstein_interval(delta, variance, set_counts[:, :, None], width)
            b_low = np.stack([q.lower_bound() for q in sequences])  # betting, range-free
            low, high = np.where(bounded, b_low, low), np.where(bounded, b_high, high)
            methods = np.where(bounded, "bernstein", "normal")
    low = np.maximum(low, 0.0)
    high = np.minimum(high, np.where(np.isfinite(ranges), ranges, np.inf))
    few = ~bounded & (nonzero < MIN_NONZERO)
    low, high = np.where(few, np.nan, low), np.where(few, np.nan, high)
    spread = score_spread(store)
    tolerance = tie_tolerance(ranges, spread)
    no_effect = ~(low > tolerance)  # NaN (unreliable) counts as no effect
    flags = _flags(no_effect=no_effect, few_nonzero=few, range_violated=violated)
    params: dict[str, Any] = {"confidence": 0.95}
    if ci_method == "bootstrap":
        params.update(resamples=resamples, seed=seed)
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
        methods=np.asarray(methods, dtype=str),
        flags=flags,
        no_effect=no_effect,
        ranges=ranges,
        spread=spread,
        tie_tolerance=tolerance,
        ci_params=params,
        accumulators=tuple(accumulators),
        set_counts=set_counts,
        **(_certified(store) if eliminating else {}),
    )


def _certified(store: ChunkedStore) -> dict[str, np.ndarray]:
    """The peak sets an elimination run certified, replayed from its stored gains."""
    eliminator = eliminator_for(store)
    eliminator.replay((g, a) for _, g, a in iter_chunk_gains(store))
    _, num_boundaries, num_sets, num_semantics = store.array("manipulated").shape
    certified = np.ones((num_boundaries, num_sets - 1, num_semantics), bool)
    certified_by = np.zeros((num_boundaries, num_semantics), bool)
    for m, columns in enumerate(eliminator.columns):
        certified[m][:, columns] = eliminator.survivors(m)
        certified_by[m, columns] = True
    return {"certified": certified, "certified_by": certified_by}


def eliminator_for(store: ChunkedStore) -> Eliminator:
    """An empty `Eliminator` for an elimination store, as its run set it up."""
    meta, identity = store.meta, store.meta["identity"]
    recorded = identity["eliminate"]
    spec = EliminationSpec(
        tuple(recorded["semantics"]), float(recorded["tie"]), bool(recorded.get("paired"))
    )
    num_sets = store.array("manipulated").shape[2]
    scored = scored_layer_sets(meta, num_sets)
    columns = interest_columns(meta["boundary_names"], meta["semantic_names"], spec)
    return Eliminator(
        columns,
        scored[:, 1:].any(axis=1),
        num_sets,
        score_ranges(store),
        int(identity["num_latents"]),
        spec.tie,
        spec.paired,
    )


def _flags(**masks: np.ndarray) -> np.ndarray:
    """';'-joined names of the masks true in each cell, [M, K, S] str."""
    out = np.full(next(iter(masks.values())).shape, "", dtype=object)
    for name, mask in masks.items():
        out = np.where(mask, np.where(out == "", name, out + ";" + name), out)
    return out.astype(str)


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
