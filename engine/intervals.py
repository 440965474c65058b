"""Confidence intervals and confidence sequences for the mean gain of a cell.

A gain is max(0, Delta score) >= 0. Where the predictor declares its score range (lo, hi), the
gain also lies in [0, R] with R = hi - lo, and finite-sample bounds for a bounded mean apply; they
stay valid for zero-inflated gains and small K, where the normal approximation collapses to [0, 0].

Fixed K (two-sided, level 1 - alpha):
    bernstein      upper end: Maurer & Pontil (2009), Thm 4, at alpha/2:
                   Delta <= mean + sqrt(2 V ln(4/alpha) / n) + 7 R ln(4/alpha) / (3 (n - 1))
                   with V the unbiased sample variance; lower end: the betting bound of
                   `ConfidenceSequence` at alpha/2 (range-free: its R term would swamp small
                   Deltas, and a lower bound of a nonnegative mean needs no upper range).
    normal         Delta -+ z SE; no range known. Unreliable with few non-zero gains (flagged).
Adaptive K (time-uniform: valid at a stopping time chosen by any rule, Ville's inequality):
    cs_bernstein   upper end: predictable plug-in empirical-Bernstein confidence sequence
                   (Waudby-Smith & Ramdas 2023, JRSSB, Thm 2; "PrPl-EB", c = 1/2); lower end: a
                   betting bound that needs only gain >= 0 (see `ConfidenceSequence`); both
                   intersected over time.
    cs_normal      asymptotic confidence sequence (Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
                   2021, Thm 2.2) tuned for width at the maximum K; no range known (flagged).
All bounds are clipped to the possible range [0, R] (or [0, inf)).

`ConfidenceSequence` evaluates the sequence at *every* latent of a chunk with sequential running
sums (np.add.accumulate), so the state after latent t, and the first latent where a target is met,
are bit-identical whatever the chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
Z_95 = 1.959963984540054
MIN_NONZERO = 10  # fewer non-zero gains: the normal interval is not trusted (flag few_nonzero)
_PRPL_CAP = 0.5  # c in Waudby-Smith & Ramdas' predictable plug-in lambda


def normal_quantile(p: float) -> float:
    """Standard normal quantile (Acklam's rational approximation refined by one Newton step)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    low, high = 0.02425, 1 - 0.02425
    a = (-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.3577518672690)
    a += (-30.66479806614716, 2.506628277459239)
    b = (-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972)
    b += (-13.28068155288572,)
    c = (-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734)
    c += (4.374664141464968, 2.938163982698783)
    d = (0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416)
    if p < low or p > high:
        q = math.sqrt(-2 * math.log(p if p < low else 1 - p))
        x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / (
            (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
        )
        x = x if p < low else -x
    else:
        q = p - 0.5
        r = q * q
        x = (
            (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5])
            * q
            / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
        )
    error = 0.5 * math.erfc(-x / math.sqrt(2)) - p
    return x - error * math.sqrt(2 * math.pi) * math.exp(x * x / 2)


def bernstein_radius(
    variance: np.ndarray, count: int | np.ndarray, width: np.ndarray, delta: float
) -> np.ndarray:
    """One-sided Maurer-Pontil radius at level 1 - delta for a mean of values in an interval of
    `width` (broadcasting); NaN below n = 2."""
    n = np.asarray(count, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = math.log(2.0 / delta)
        radius = np.sqrt(2.0 * np.maximum(variance, 0.0) * log_term / n) + 7.0 * width * (
            log_term / (3.0 * (n - 1.0))
        )
    return np.where(n >= 2, radius, np.nan)


def bernstein_interval(
    mean: np.ndarray, variance: np.ndarray, count: int, width: np.ndarray, alpha: float = ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided empirical-Bernstein interval of a mean of values in [0, width], clipped to it."""
    radius = bernstein_radius(variance, count, width, alpha / 2.0)
    return np.clip(mean - radius, 0.0, width), np.clip(mean + radius, 0.0, width)


def normal_interval(
    mean: np.ndarray, stderr: np.ndarray, alpha: float = ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """Delta -+ z SE, clipped below at 0 (a mean gain is never negative)."""
    z = Z_95 if alpha == ALPHA else normal_quantile(1.0 - alpha / 2.0)
    return np.maximum(mean - z * stderr, 0.0), mean + z * stderr


@dataclass
class _Sums:
    """Running sums of one boundary's sequence, [K, S] float64 each (see `ConfidenceSequence`)."""

    count: int
    y: np.ndarray  # sum of scaled gains y = gain / R
    dev: np.ndarray  # sum of (y_i - mu_i)^2, mu_i the regularized mean after i
    lam: np.ndarray  # sum of lambda_i
    lam_y: np.ndarray  # sum of lambda_i y_i
    penalty: np.ndarray  # sum of v_i psi_E(lambda_i)
    high: np.ndarray  # running minimum of the bounded sequence's upper end (scaled)
    x: np.ndarray  # sum of raw gains (asymptotic sequence)
    x2: np.ndarray  # sum of squared raw gains
    nonzero: np.ndarray  # number of non-zero gains
    y2: np.ndarray  # sum of squared scaled gains (the bets' plain variance)
    wealth: np.ndarray  # [K, S, G] log-wealth of the bets against mean <= BET_GRID[g]
    bet_low: np.ndarray  # running maximum of the betting lower bound (scaled)


@dataclass(frozen=True, eq=False)
class SequencePrefix:
    """The sequence after each latent of one chunk: low/high [n, K, S] and what `commit` needs."""

    low: np.ndarray
    high: np.ndarray
    nonzero: np.ndarray  # [n, K, S]
    sums: tuple[np.ndarray, ...]  # prefix arrays [n, K, S] of the running sums, in _Sums order
    y: np.ndarray  # [n, K, S] scaled gains and the bets' predictable moments, to replay them
    moments: tuple[np.ndarray, np.ndarray]
    end: tuple[np.ndarray, np.ndarray]  # wealth and bet_low after the whole chunk


class ConfidenceSequence:
    """Time-uniform 95% intervals of every mean gain of one boundary, [K, S], latent by latent.

    Bounded semantics (`ranges` [S] holds R; NaN: unknown): the upper end is the PrPl-EB
    sequence, the lower end a betting bound that needs only gain >= 0 (no range term): for each
    m on a fixed grid, the wealth prod_i (1 + lambda_i (y_i - m)), lambda_i <= c / m predictable,
    is a nonnegative supermartingale while the mean is <= m (Waudby-Smith & Ramdas' hedged
    capital, one side); m is rejected once it reaches 2 / alpha (Ville). The lower bound is the
    largest grid point below which every point is rejected. Each side has alpha / 2.
    Unknown ranges: the asymptotic sequence. `horizon` is the K it is tuned for.
    """

    def __init__(self, num_sets: int, ranges: np.ndarray, horizon: int, alpha: float = ALPHA):
        shape = (num_sets, len(ranges))
        zeros = np.zeros(shape)
        self.ranges = np.asarray(ranges, np.float64)
        self.bounded = np.isfinite(self.ranges) & (self.ranges > 0)  # [S]
        self.alpha = alpha
        log_inv = -2.0 * math.log(alpha)
        self._rho2 = (log_inv + math.log(log_inv + 1.0)) / max(horizon, 1)
        self.state = _Sums(
            0,
            *(zeros.copy() for _ in range(5)),
            np.ones(shape),
            *(zeros.copy() for _ in range(4)),
            np.zeros((*shape, len(BET_GRID))),
            zeros.copy(),
        )

    @property
    def count(self) -> int:
        return self.state.count

    def interval(self, bounded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The sequence's interval after the latents seen so far, ([K, S], [K, S]).

        `bounded` [K, S] (default: the semantics with a range) picks the bounded sequence per
        cell; the others get the asymptotic one (e.g. where gains broke the declared range).
        """
        s = self.state
        if s.count == 0:
            nan = np.full(s.y.shape, np.nan)
            return nan, nan.copy()
        low, high = self._combine(
            s.bet_low[None], s.high[None], s.x[None], s.x2[None], np.array([s.count]), bounded
        )
        return low[0], high[0]

    def lower_bound(self) -> np.ndarray:
        """The betting lower bound of every mean gain (bounded semantics), [K, S] raw units."""
        return self.state.bet_low * np.where(self.bounded, self.ranges, np.nan)

    def extend(self, gains: np.ndarray) -> SequencePrefix:
        """The sequence after each latent of gains [n, K, S] (not committed; see `commit`)."""
        s, a = self.state, self.alpha
        x = np.asarray(gains, np.float64)
        n = len(x)
        t = (s.count + np.arange(1, n + 1, dtype=np.float64))[:, None, None]  # [n, 1, 1]
        width = np.where(self.bounded, self.ranges, 1.0)  # [S]
        y = np.clip(x / width, 0.0, 1.0)  # [n, K, S]
        sum_y = _prefix(s.y, y)
        mu = (0.5 + sum_y) / (t + 1.0)  # regularized mean after each latent
        mu_before = np.concatenate([((0.5 + s.y) / (s.count + 1.0))[None], mu[:-1]])
        sum_dev = _prefix(s.dev, (y - mu) ** 2)
        var = (0.25 + sum_dev) / (t + 1.0)
        var_before = np.concatenate([((0.25 + s.dev) / (s.count + 1.0))[None], var[:-1]])
        log_term = math.log(2.0 / a)
        lam = np.minimum(np.sqrt(2.0 * log_term / (var_before * t * np.log1p(t))), _PRPL_CAP)
        psi = (-np.log1p(-lam) - lam) / 4.0
        sum_lam = _prefix(s.lam, lam)
        sum_lam_y = _prefix(s.lam_y, lam * y)
        penalty = _prefix(s.penalty, 4.0 * (y - mu_before) ** 2 * psi)
        centre = sum_lam_y / sum_lam
        radius = (log_term + penalty) / sum_lam
        high = np.minimum.accumulate(
            np.concatenate([s.high[None], np.clip(centre + radius, 0.0, 1.0)]), axis=0
        )[1:]
        sum_y2 = _prefix(s.y2, y * y)
        moments = _moments_before(s, sum_y, sum_y2, t)
        wealth, bet_low_end, bet_low = _bet(s.wealth, s.bet_low, y, moments, log_term)
        sum_x, sum_x2 = _prefix(s.x, x), _prefix(s.x2, x * x)
        nonzero = _prefix(s.nonzero, (x > 0).astype(np.float64))
        out_low, out_high = self._combine(bet_low, high, sum_x, sum_x2, t[:, 0, 0])
        return SequencePrefix(
            out_low,
            out_high,
            nonzero,
            (sum_y, sum_dev, sum_lam, sum_lam_y, penalty, high, sum_x, sum_x2, nonzero, sum_y2),
            y,
            moments,
            (wealth, bet_low_end),
        )

    def commit(self, prefix: SequencePrefix, rows: int) -> None:
        """Keep the first `rows` latents of `prefix` (the rest are discarded: stopped)."""
        if rows == 0:
            return
        s = self.state
        if rows == len(prefix.y):
            wealth, bet_low = prefix.end
        else:  # replay the bets on the kept rows (same additions, same bits)
            log_term = math.log(2.0 / self.alpha)
            moments = tuple(m[:rows] for m in prefix.moments)
            wealth, bet_low, _ = _bet(s.wealth, s.bet_low, prefix.y[:rows], moments, log_term)
        sums = (p[rows - 1].copy() for p in prefix.sums)
        self.state = _Sums(s.count + rows, *sums, wealth, bet_low)

    def _combine(
        self, low, high, sum_x, sum_x2, t, bounded: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Bounded cells: the scaled bounds times R; others: the asymptotic sequence."""
        bounded = self.bounded if bounded is None else bounded
        t = np.asarray(t, np.float64)[:, None, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = sum_x / t
            var = np.maximum(sum_x2 - t * mean * mean, 0.0) / (t - 1.0)
            rho2 = self._rho2
            spread = t * rho2 + 1.0
            scale = np.sqrt(2.0 * spread / (t * t * rho2) * np.log(np.sqrt(spread) / self.alpha))
            radius = np.where(t >= 2, np.sqrt(var) * scale, np.nan)
        width = np.where(self.bounded, self.ranges, 1.0)
        a_low = np.maximum(mean - radius, 0.0)
        a_high = mean + radius
        return np.where(bounded, low * width, a_low), np.where(bounded, high * width, a_high)


BET_GRID = np.geomspace(1e-6, 1.0, 121)  # candidate means (scaled), ~12% apart
_BET_CAP = 0.5  # lambda <= c / m keeps 1 + lambda (y - m) >= 1 - c
_BET_BLOCK = 1 << 22  # elements per block of the [rows, K, S, G] bet arrays (bounded memory)


def _moments_before(s: _Sums, sum_y, sum_y2, t) -> tuple[np.ndarray, np.ndarray]:
    """Plain mean and variance of the scaled gains before each latent, [n, K, S] each."""
    before_y = np.concatenate([s.y[None], sum_y[:-1]])
    before_y2 = np.concatenate([s.y2[None], sum_y2[:-1]])
    seen = np.maximum(t - 1.0, 1.0)
    mean = before_y / seen
    return mean, np.maximum(before_y2 / seen - mean * mean, 0.0)


def _bet(
    wealth: np.ndarray,
    running: np.ndarray,
    y: np.ndarray,
    moments: tuple[np.ndarray, np.ndarray],
    log_term: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Play the bets on y [n, K, S]: (log-wealth [K, S, G] after, running lower bound [K, S]
    after, running lower bound after each latent [n, K, S]); all scaled to [0, 1].

    Bet sizes are aGRAPA (Waudby-Smith & Ramdas): lambda = (mean - m) / (var + (mean - m)^2)
    from the latents before, clipped to [0, c / m]: predictable, so validity holds for any size.
    """
    n = len(y)
    lows = np.empty(y.shape)
    rows = max(1, _BET_BLOCK // max(1, y[0].size * len(BET_GRID)))
    cap = _BET_CAP / BET_GRID  # [G]
    mean, var = moments
    for start in range(0, n, rows):
        block = slice(start, min(start + rows, n))
        edge = mean[block][..., None] - BET_GRID  # [b, K, S, G]
        with np.errstate(divide="ignore", invalid="ignore"):
            growth = np.nan_to_num(edge / (var[block][..., None] + edge * edge), nan=0.0)
        bets = np.clip(growth, 0.0, cap)
        steps = np.log1p(bets * (y[block][..., None] - BET_GRID))
        cumulative = _prefix(wealth, steps)  # [b, K, S, G]
        wealth = cumulative[-1]
        leading = np.logical_and.accumulate(cumulative >= log_term, axis=-1).sum(axis=-1)
        bound = np.where(leading > 0, BET_GRID[np.maximum(leading - 1, 0)], 0.0)  # [b, K, S]
        lows[block] = np.maximum.accumulate(np.concatenate([running[None], bound]), axis=0)[1:]
        running = lows[block][-1]
    return wealth, running, lows


def _prefix(previous: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Running sums previous + values[0], + values[1], ... [n, ...], added one at a time."""
    return np.add.accumulate(np.concatenate([previous[None], values]), axis=0)[1:]
