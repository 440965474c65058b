"""Peak-layer sets with simultaneous confidence (multiple comparisons with the best).

For one (boundary, semantic) with per-layer mean gains d_l (l = 0..L-1) measured on the same K
latents, layer j *beats* layer l when the lower confidence bound of the paired difference
d_j - d_l exceeds the tie tolerance. The peak set holds every layer no other layer beats.

All L (L - 1) ordered pairs are tested at level alpha / (L (L - 1)) (Bonferroni), so with
probability >= 1 - alpha no true difference d_j - d_l <= 0 is declared positive: every layer whose
true Delta equals the maximum is in the set, however many layers tie (Hsu's MCB, made
simultaneous for all tied best layers). The bound of a paired difference is empirical-Bernstein
where the semantic's range R is known (differences lie in [-R, R]), else normal.

Differences at or below `tie_tolerance` are ties: float rounding (1e-10 apart) is never signal.
"""

from __future__ import annotations

import numpy as np

from .intervals import ALPHA, bernstein_radius, normal_quantile

TIE_RTOL = 1e-5  # ties: |difference| <= TIE_RTOL * the semantic's scale (~100 float32 ulps)


def tie_tolerance(ranges: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per semantic [S]: TIE_RTOL times the score range R where known, else the score spread."""
    scale = np.where(np.isfinite(ranges), ranges, spread)
    return TIE_RTOL * np.nan_to_num(scale, nan=0.0)


def paired_bound(comoment: np.ndarray, count: int, ranges: np.ndarray, delta: float) -> np.ndarray:
    """One-sided radius of every paired layer difference at level 1 - delta: [S, L, L].

    comoment [S, L, L] is the co-moment of the per-layer gains (sum of centred products over K).
    """
    diagonal = np.diagonal(comoment, axis1=1, axis2=2)  # [S, L]
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = (diagonal[:, :, None] + diagonal[:, None, :] - 2.0 * comoment) / (count - 1)
    variance = np.maximum(variance, 0.0)
    bounded = np.isfinite(ranges)[:, None, None]
    width = np.where(bounded, 2.0 * np.nan_to_num(ranges, nan=1.0)[:, None, None], 1.0)
    bernstein = bernstein_radius(variance, count, width, delta)
    normal = normal_quantile(1.0 - delta) * np.sqrt(variance / count)
    return np.where(bounded, bernstein, normal)


def peak_sets(
    means: np.ndarray,
    comoment: np.ndarray,
    count: int,
    ranges: np.ndarray,
    tolerance: np.ndarray,
    alpha: float = ALPHA,
) -> tuple[np.ndarray, np.ndarray]:
    """Peak layer [S] and the simultaneous 95% peak set [L, S] of one boundary.

    means [L, S]: per-layer mean gains; comoment [S, L, L]; ranges [S] (NaN: unknown);
    tolerance [S]: differences up to it are ties. The peak (largest mean, lowest index among
    ties) is always in the set.
    """
    num_layers = means.shape[0]
    peak = np.argmax(means, axis=0)  # [S]
    if num_layers < 2 or count < 2:
        return peak, np.ones(means.shape, bool)
    difference = means.T[:, :, None] - means.T[:, None, :]  # [S, j, l]: d_j - d_l
    radius = paired_bound(comoment, count, ranges, alpha / (num_layers * (num_layers - 1)))
    tie = tolerance[:, None, None]
    beats = (difference - radius > tie) & (difference > tie)
    in_set = ~beats.any(axis=1)  # [S, l]: no j beats l
    in_set[np.arange(len(peak)), peak] = True
    return peak, in_set.T
