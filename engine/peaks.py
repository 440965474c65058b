"""Peak-layer sets with simultaneous confidence (multiple comparisons with the best).

For one (boundary, semantic) with per-layer mean gains d_l (l = 0..L-1) measured on the same K
latents, layer j *beats* layer l when the lower confidence bound of the paired difference
d_j - d_l exceeds the tie tolerance. The peak set holds every layer no other layer beats.

All L (L - 1) ordered pairs are tested at level alpha / (L (L - 1)) (Bonferroni), so with
probability >= 1 - alpha no true difference d_j - d_l <= 0 is declared positive: every layer whose
true Delta equals the maximum is in the set, however many layers tie (Hsu's MCB, made
simultaneous for all tied best layers). The bound of a paired difference is normal (z at
1 - alpha / (L (L - 1)), about 3.6 for L = 18): an empirical-Bernstein bound with the range
2R of a difference would make every set the whole stack at the K a run can afford.

Differences at or below `tie_tolerance` are ties: float rounding (1e-10 apart) is never signal.
"""

from __future__ import annotations

import numpy as np

from .intervals import ALPHA, normal_quantile

TIE_RTOL = 1e-5  # ties: |difference| <= TIE_RTOL * the semantic's scale (~100 float32 ulps)


def tie_tolerance(ranges: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per semantic [S]: TIE_RTOL times the score range R where known, else the score spread."""
    scale = np.where(np.isfinite(ranges), ranges, spread)
    return TIE_RTOL * np.nan_to_num(scale, nan=0.0)


def paired_bound(comoment: np.ndarray, count: int, delta: float) -> np.ndarray:
    """One-sided normal radius of every paired layer difference at level 1 - delta: [S, L, L].

    comoment [S, L, L] is the co-moment of the per-layer gains (sum of centred products over K).
    """
    diagonal = np.diagonal(comoment, axis1=1, axis2=2)  # [S, L]
    with np.errstate(invalid="ignore", divide="ignore"):
        variance = (diagonal[:, :, None] + diagonal[:, None, :] - 2.0 * comoment) / (count - 1)
    return normal_quantile(1.0 - delta) * np.sqrt(np.maximum(variance, 0.0) / count)


def peak_sets(
    means: np.ndarray,
    comoment: np.ndarray,
    count: int,
    tolerance: np.ndarray,
    alpha: float = ALPHA,
) -> tuple[np.ndarray, np.ndarray]:
    """Peak layer [S] and the simultaneous 95% peak set [L, S] of one boundary.

    means [L, S]: per-layer mean gains; comoment [S, L, L];
    tolerance [S]: differences up to it are ties. The peak (largest mean, lowest index among
    ties) is always in the set.
    """
    num_layers = means.shape[0]
    with np.errstate(invalid="ignore"):
        top = np.nanmax(np.where(np.isnan(means), -np.inf, means), axis=0)  # [S]
        # the lowest layer within the tie tolerance of the largest mean: rounding never decides
        peak = np.argmax(means >= top - tolerance[None, :], axis=0)  # [S]
    if num_layers < 2 or count < 2:
        return peak, np.ones(means.shape, bool)
    difference = means.T[:, :, None] - means.T[:, None, :]  # [S, j, l]: d_j - d_l
    radius = paired_bound(comoment, count, alpha / (num_layers * (num_layers - 1)))
    tie = tolerance[:, None, None]
    beats = (difference - radius > tie) & (difference > tie)
    in_set = ~beats.any(axis=1)  # [S, l]: no j beats l
    in_set[np.arange(len(peak)), peak] = True
    return peak, in_set.T
