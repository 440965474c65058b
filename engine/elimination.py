"""Successive elimination of layers: stop moving the layers that are clearly not the peak.

The question "at which layers does semantic s live" needs the peak, not every layer's Delta to
the same precision. For each boundary and each semantic of interest s, every layer l keeps a
time-uniform confidence sequence of its Delta_l (`intervals.ConfidenceSequence`: bounded
semantics PrPl-EB upper / betting lower, others the asymptotic sequence), updated after every
latent in chunk order. Layer l is eliminated for s at the first latent where

    upper_l < max over surviving trusted layers j of lower_j

and a layer set stops moving once it is eliminated for every semantic of interest of its
boundary. The boundary (its all-layers row included) stops when each semantic of interest is
resolved: one layer survives, or, with a tie tolerance rho > 0, the survivors' intervals lie
within rho times the best lower bound of each other (every survivor's Delta is then certified
within rho * Delta_peak of the peak's). Otherwise it runs to max K.

Correction (Bonferroni): each sequence runs at alpha' = alpha / (L * P), P the number of
(boundary, semantic of interest) pairs of the run, L the number of layers; each side gets
alpha' / 2. With probability >= 1 - alpha every sequence covers its Delta at every latent
(time-uniform, so valid under this continuous monitoring), and then no layer whose Delta is the
maximum is ever eliminated, for every pair at once: the survivors are a simultaneous 95% peak set
at every latent. Cells with an asymptotic sequence and fewer than MIN_NONZERO non-zero gains
take no part in a decision (neither eliminated nor eliminating).

Paired (`paired=True`, `--eliminate-paired`): layers are compared on the same latents, so the
differences d_jl = gain_j - gain_l vary much less than the gains. Every ordered pair gets the
asymptotic confidence sequence of its mean difference (`cs_normal`: Waudby-Smith, Arbour, Sinha,
Kennedy & Ramdas 2021; valid as K grows, like the fixed-K MCB sets' normal bounds, not finite-
sample), at alpha' = alpha / (L (L - 1) P); l is eliminated once a surviving j has
lower(d_jl) > the tie tolerance of `peaks` with >= MIN_NONZERO latents where j beat l. Same
guarantee (a best layer is never eliminated, all pairs at once, w.p. >= 1 - alpha, asymptotically);
a semantic is resolved when one layer survives (no tie rule).

Decisions are made latent by latent in chunk order by the driver, so the stop of every layer set
(and the store) is the same for any chunk size, resume or executor. `SetSequences` gives every
cell of a store with unequal K per layer set its own (uncorrected, 95%) confidence sequence for
the report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .errors import ScoreError
from .intervals import ALPHA, MIN_NONZERO, ConfidenceSequence, SequencePrefix
from .peaks import TIE_RTOL


@dataclass(frozen=True)
class EliminationSpec:
    """Successive elimination: the semantics of interest (empty: each boundary's own semantic,
    the one it is named after; a boundary with none is not eliminated) and the relative tie
    tolerance rho that resolves survivors that cannot be told apart (0: only one survivor, or
    max K, resolves a semantic)."""

    semantics: tuple[str, ...] = ()
    tie: float = 0.0
    paired: bool = False  # asymptotic sequences of paired layer differences (see module docs)


def interest_columns(
    boundary_names: list[str], semantic_names: list[str], spec: EliminationSpec
) -> list[np.ndarray]:
    """Per boundary, the column indices of its semantics of interest ([] : not eliminated)."""
    unknown = [s for s in spec.semantics if s not in semantic_names]
    if unknown:
        raise ScoreError(
            f"--eliminate-semantic {', '.join(unknown)} is not a scored semantic; "
            f"use one of {', '.join(semantic_names)}"
        )
    if spec.tie < 0 or not np.isfinite(spec.tie):
        raise ScoreError(f"--eliminate-tie must be >= 0, got {spec.tie}")
    if spec.paired and spec.tie:
        raise ScoreError(
            "--eliminate-tie needs the per-layer sequences; drop --eliminate-paired or the tie"
        )
    if spec.semantics:
        chosen = [semantic_names.index(s) for s in dict.fromkeys(spec.semantics)]
        return [np.array(chosen, int) for _ in boundary_names]
    return [
        np.array([semantic_names.index(n)] if n in semantic_names else [], int)
        for n in boundary_names
    ]


class Eliminator:
    """The elimination state of every boundary of a run: which layer sets still move, and the K
    at which each stopped. Layer set 0 is 'all layers' (never a candidate; it moves while its
    boundary does); sets 1..L are the single layers."""

    def __init__(
        self,
        columns: list[np.ndarray],
        tracked: np.ndarray,
        num_sets: int,
        ranges: np.ndarray,
        horizon: int,
        tie: float = 0.0,
        paired: bool = False,
    ) -> None:
        """columns: per boundary its semantics of interest; tracked [M] bool: boundaries with
        layer-wise rows (Z boundaries and PGGAN have nothing to eliminate); ranges [S]: R;
        paired: sequences of the L (L - 1) ordered layer differences instead of the L layers."""
        self.columns = [c if t else c[:0] for c, t in zip(columns, tracked, strict=True)]
        layers = num_sets - 1
        pairs = sum(len(c) for c in self.columns)
        tests = layers * (layers - 1) if paired else layers
        self.alpha = ALPHA / max(1, tests * pairs)  # Bonferroni over tests and pairs
        self.tie, self.paired = tie, paired
        self.tolerance = [TIE_RTOL * np.nan_to_num(ranges[c], nan=0.0) for c in self.columns]
        cells = layers * layers if paired else layers
        self.sequences = [
            ConfidenceSequence(
                cells, np.full(len(c), np.nan) if paired else ranges[c], horizon, self.alpha
            )
            if len(c)
            else None
            for c in self.columns
        ]
        self.alive = [np.ones((layers, len(c)), bool) for c in self.columns]  # [L, S']
        self.resolved = [np.zeros(len(c), bool) for c in self.columns]  # [S']
        self.eliminated_at = [np.zeros((layers, len(c)), np.int64) for c in self.columns]
        self.active = np.ones(len(columns), bool)
        self.set_counts = np.zeros((len(columns), num_sets), np.int64)  # K per layer set

    @property
    def num_sets(self) -> int:
        return self.set_counts.shape[1]

    def moving(self) -> np.ndarray:
        """[M, K] bool: the layer sets each boundary still moves (before scored-set masks)."""
        mask = np.ones(self.set_counts.shape, bool)
        for b, alive in enumerate(self.alive):
            if alive.shape[1]:
                mask[b, 1:] = alive.any(axis=1)
        return mask & self.active[:, None]

    def update(self, b: int, gains: np.ndarray) -> tuple[int, np.ndarray]:
        """Apply the rule to boundary b's gains [n, K, S] on its next n latents (NaN where a set
        was not moved): how many of these latents the boundary keeps, and moved [rows, K] bool,
        which sets were moved on each kept latent."""
        n = len(gains)
        sequence = self.sequences[b]
        if sequence is None:  # not eliminated: every set moves to max K
            self.set_counts[b] += n
            return n, np.ones((n, self.num_sets), bool)
        columns, alive, resolved = self.columns[b], self.alive[b], self.resolved[b]
        values = np.nan_to_num(gains[:, 1:][..., columns], nan=0.0)  # [n, L, S']
        if self.paired:  # d[j, l] = gain_j - gain_l, every ordered pair
            values = (values[:, :, None] - values[:, None, :]).reshape(n, -1, len(columns))
        prefix = sequence.extend(values)
        trusted = sequence.bounded[None, None] | (prefix.nonzero >= MIN_NONZERO)  # [n, cells, S']
        moved = np.zeros((n, self.num_sets), bool)
        rows = n
        for i in range(n):
            moved[i, 0], moved[i, 1:] = True, alive.any(axis=1)
            self._decide(b, prefix, trusted, i, sequence.count + i + 1)
            if resolved.all():
                rows = i + 1
                self.active[b] = False
                break
        sequence.commit(prefix, rows)
        self.set_counts[b] += moved[:rows].sum(axis=0)
        return rows, moved[:rows]

    def _decide(
        self, b: int, prefix: SequencePrefix, trusted: np.ndarray, i: int, count: int
    ) -> None:
        """Eliminate and resolve after latent i of the chunk (count latents in all)."""
        if self.paired:
            self._decide_paired(b, prefix, trusted, i, count)
            return
        alive, resolved = self.alive[b], self.resolved[b]
        low, high = prefix.low[i], prefix.high[i]  # [L, S']
        usable = alive & trusted[i] & np.isfinite(low) & np.isfinite(high)
        best = np.max(np.where(usable, low, -np.inf), axis=0)  # [S']
        out = usable & (high < best) & ~resolved
        alive &= ~out
        self.eliminated_at[b][out] = count
        resolved |= alive.sum(axis=0) == 1
        if self.tie > 0:
            spread = np.max(np.where(alive, high, -np.inf), axis=0) - np.min(
                np.where(alive, low, np.inf), axis=0
            )
            resolved |= (alive == usable).all(axis=0) & (spread <= self.tie * best)

    def _decide_paired(
        self, b: int, prefix: SequencePrefix, trusted: np.ndarray, i: int, count: int
    ) -> None:
        """Paired: layer l is eliminated when a surviving j has lower(d_jl) above the tie
        tolerance (TIE_RTOL * R, as in `peaks`) with >= MIN_NONZERO latents where j beat l."""
        alive, resolved = self.alive[b], self.resolved[b]
        layers = len(alive)
        low = prefix.low[i].reshape(layers, layers, -1)  # [j, l, S']
        usable = trusted[i].reshape(layers, layers, -1) & alive[:, None] & alive[None]
        beaten = (usable & (low > self.tolerance[b])).any(axis=0)  # [l, S']
        out = alive & beaten & ~resolved
        alive &= ~out
        self.eliminated_at[b][out] = count
        resolved |= alive.sum(axis=0) == 1

    def replay(self, chunks: Iterable[tuple[np.ndarray, np.ndarray]]) -> None:
        """Rebuild the state from a store's completed chunks, in order: (gains [n, M, K, S],
        active [n, M]) each (a resumed run decides exactly as an uninterrupted one)."""
        for chunk_gains, active in chunks:
            for b in range(len(self.active)):
                rows = chunk_gains[active[:, b], b]
                if len(rows):
                    self.update(b, rows)

    def survivors(self, b: int) -> np.ndarray:
        """[L, S'] bool: the layers not eliminated for each semantic of interest of boundary b
        (the simultaneous 95% peak set the elimination certifies)."""
        return self.alive[b].copy()

    def record(
        self, boundary_names: list[str], semantic_names: list[str], labels: list[str]
    ) -> dict:
        """What `finished['elimination']` says: per boundary its semantics of interest, the K
        of every layer set, when each layer was eliminated, the survivors, and the images used
        against a fixed-K run of the same K (the boundary's largest)."""
        out: dict = {
            "alpha_per_sequence": self.alpha,
            "tie": self.tie,
            "sequences": "paired_asymptotic" if self.paired else "per_layer",
            "boundaries": {},
        }
        for b, name in enumerate(boundary_names):
            counts = self.set_counts[b]
            scored = counts > 0
            entry = {
                "semantics": [semantic_names[c] for c in self.columns[b]],
                "resolved": bool(not self.active[b]) if len(self.columns[b]) else None,
                "k_per_layer_set": {label: int(c) for label, c in zip(labels, counts, strict=True)},
                "images": int(counts.sum()),
                "images_fixed_k": int(counts.max() * scored.sum()),
            }
            entry["eliminated_at"] = {
                semantic_names[c]: {
                    labels[layer + 1]: int(self.eliminated_at[b][layer, s])
                    for layer in np.flatnonzero(~self.alive[b][:, s])
                }
                for s, c in enumerate(self.columns[b])
            }
            entry["peak_set"] = {
                semantic_names[c]: np.flatnonzero(self.alive[b][:, s]).tolist()
                for s, c in enumerate(self.columns[b])
            }
            out["boundaries"][name] = entry
        return out


class SetSequences:
    """95% confidence sequences of one boundary's cells [K, S] when each layer set has its own
    K (elimination): one `ConfidenceSequence` per layer set, fed only the latents it moved on.
    Same interface as `ConfidenceSequence` where `stats` uses it."""

    def __init__(self, num_sets: int, ranges: np.ndarray, horizon: int) -> None:
        self.parts = [ConfidenceSequence(1, ranges, horizon) for _ in range(num_sets)]
        self.bounded = self.parts[0].bounded

    @property
    def count(self) -> int:
        return max(p.count for p in self.parts)

    def add(self, gains: np.ndarray, moved: np.ndarray) -> None:
        """gains [n, K, S] (NaN where not moved), moved [n, K] bool."""
        for k, part in enumerate(self.parts):
            rows = gains[moved[:, k], k][:, None]  # [n_k, 1, S]
            if len(rows):
                part.commit(part.extend(rows), len(rows))

    def lower_bound(self) -> np.ndarray:
        return np.concatenate([p.lower_bound() for p in self.parts])  # [K, S]

    def interval(self, bounded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        pairs = [
            p.interval(None if bounded is None else bounded[k : k + 1])
            for k, p in enumerate(self.parts)
        ]
        return np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs])
