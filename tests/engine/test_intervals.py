"""Intervals for bounded gains: valid for zero-inflated cells and small K, never out of range,
bit-identical whatever the chunking; peak-layer sets with simultaneous confidence."""

import numpy as np
import pytest

from rescore.engine.intervals import ConfidenceSequence, bernstein_interval, normal_interval
from rescore.engine.peaks import TIE_RTOL, peak_sets, tie_tolerance
from rescore.engine.stats import GainAccumulator


def _bounded_interval(x: np.ndarray, width: float) -> tuple[float, float]:
    """The fixed-K interval `auto` reports for a bounded cell: betting low, Bernstein high."""
    sequence = ConfidenceSequence(1, np.array([width]), len(x))
    sequence.commit(sequence.extend(x[:, None, None]), len(x))
    _, high = bernstein_interval(x.mean(), x.var(ddof=1), len(x), width)
    return float(sequence.lower_bound()[0, 0]), float(high)


def _zero_inflated(rng, n, zeros):
    return np.where(rng.random(n) >= zeros, rng.uniform(0.0, 0.4, n), 0.0)


def test_all_zero_gains_give_a_positive_width_interval_inside_the_range():
    low, high = _bounded_interval(np.zeros(30), 1.0)
    assert low == 0.0 and 0.0 < high <= 1.0
    normal_low, normal_high = normal_interval(np.zeros(1), np.zeros(1))
    assert normal_high[0] == 0.0  # what the old method printed: [0, 0]


@pytest.mark.parametrize("zeros, k", [(0.99, 30), (0.99, 100), (0.88, 30)])
def test_zero_inflated_cells_are_covered_at_small_k(zeros, k):
    rng = np.random.default_rng(int(zeros * 100) + k)
    truth = (1 - zeros) * 0.2
    covered = 0
    for _ in range(200):
        low, high = _bounded_interval(_zero_inflated(rng, k, zeros), 1.0)
        assert 0.0 <= low <= high <= 1.0
        covered += low <= truth <= high
    assert covered / 200 >= 0.93


def test_sequence_is_bit_identical_whatever_the_chunking_and_stays_in_range():
    rng = np.random.default_rng(0)
    gains = rng.random((257, 3, 2)) * (rng.random((257, 3, 2)) < 0.3)
    ranges = np.array([1.0, np.nan])
    whole = ConfidenceSequence(3, ranges, 500)
    whole.commit(whole.extend(gains), 257)
    pieces = ConfidenceSequence(3, ranges, 500)
    for start, stop in [(0, 1), (1, 100), (100, 257)]:
        pieces.commit(pieces.extend(gains[start:stop]), stop - start)
    for a, b in zip(whole.interval(), pieces.interval(), strict=True):
        assert np.array_equal(a, b)
    low, high = whole.interval()
    assert np.all(low[:, 0] >= 0) and np.all(high[:, 0] <= 1.0) and np.all(high > low)


def test_commit_of_a_prefix_equals_extending_only_that_prefix():
    rng = np.random.default_rng(1)
    gains = rng.random((50, 2, 1)) * 0.3
    stopped = ConfidenceSequence(2, np.array([1.0]), 100)
    stopped.commit(stopped.extend(gains), 17)
    direct = ConfidenceSequence(2, np.array([1.0]), 100)
    direct.commit(direct.extend(gains[:17]), 17)
    assert stopped.count == 17
    for a, b in zip(stopped.interval(), direct.interval(), strict=True):
        assert np.array_equal(a, b)


def _toy_layers(rng, k, num_layers, tied, bounded):
    """Per-layer gains [k, L] of a toy model: the first `tied` layers share the top mean."""
    means = np.full(num_layers, 0.3)
    means[:tied] = 0.5
    shared = rng.normal(0.0, 0.2, size=(k, 1))  # latent-level noise common to all layers
    gains = np.maximum(means + shared + rng.normal(0.0, 0.1, size=(k, num_layers)), 0.0)
    return np.minimum(gains, 1.0) if bounded else gains


@pytest.mark.parametrize("tied", [2, 3, 5])
@pytest.mark.parametrize("bounded", [False, True])
def test_peak_sets_hold_every_truly_tied_layer_in_95_percent_of_reruns(tied, bounded):
    num_layers, k, runs = 8, 200, 200
    ranges = np.array([1.0 if bounded else np.nan])
    hits = 0
    for seed in range(runs):
        gains = _toy_layers(np.random.default_rng(seed), k, num_layers, tied, bounded)
        accumulator = GainAccumulator(num_layers, 1)
        accumulator.add(gains[:, :, None])
        _, mask = peak_sets(accumulator.mean, accumulator.comoment, k, tie_tolerance(ranges, [0.2]))
        hits += mask[:tied, 0].all()
    assert hits / runs >= 0.95


def test_rounding_never_breaks_a_tie():
    """Layers equal up to 1e-10 on every latent (paired SE ~ 0) stay tied at any K."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.0, 1.0, size=(2000, 1))
    gains = np.concatenate([base, base + 1e-10, base * 0.5], axis=1)  # [K, 3]
    accumulator = GainAccumulator(3, 1)
    accumulator.add(gains[:, :, None])
    for ranges in (np.array([np.nan]), np.array([1.0])):
        tolerance = tie_tolerance(ranges, np.array([0.3]))
        assert tolerance[0] == pytest.approx(TIE_RTOL * (0.3 if np.isnan(ranges[0]) else 1.0))
        peak, mask = peak_sets(accumulator.mean, accumulator.comoment, 2000, tolerance)
        assert mask[:, 0].tolist() == [True, True, False]


def test_a_clearly_better_layer_excludes_the_others():
    rng = np.random.default_rng(6)
    gains = _toy_layers(rng, 400, 4, 1, False)
    gains[:, 0] += 0.3
    accumulator = GainAccumulator(4, 1)
    accumulator.add(gains[:, :, None])
    peak, mask = peak_sets(accumulator.mean, accumulator.comoment, 400, np.zeros(1))
    assert peak[0] == 0 and mask[:, 0].tolist() == [True, False, False, False]
