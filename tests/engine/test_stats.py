"""Delta statistics: exact accumulation, CI coverage by simulation, paired layer comparisons."""

import math

import numpy as np
import pytest

from rescore.engine.stats import Z_95, GainAccumulator, bootstrap_ci


def _expected_gain(mu: float, sigma: float) -> float:
    """E[max(0, X)] for X ~ N(mu, sigma^2)."""
    a = mu / sigma
    phi = math.exp(-a * a / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + math.erf(a / math.sqrt(2)))
    return mu * cdf + sigma * phi


def test_accumulator_equals_direct_moments_whatever_the_chunking():
    rng = np.random.default_rng(0)
    data = np.maximum(rng.normal(0.2, 1.0, size=(103, 4, 3)), 0).astype(np.float32)
    accumulator = GainAccumulator(4, 3)
    for start, stop in [(0, 1), (1, 40), (40, 41), (41, 103)]:
        accumulator.add(data[start:stop])
    assert accumulator.count == 103
    assert np.allclose(accumulator.mean, data.mean(0), atol=1e-6)
    assert np.allclose(accumulator.stderr(), data.std(0, ddof=1) / np.sqrt(103), atol=1e-6)
    diff = data[:, 2, :] - data[:, 0, :]
    paired = accumulator.paired_stderr(np.full(3, 2), np.zeros(3, int))
    assert np.allclose(paired, diff.std(0, ddof=1) / np.sqrt(103), atol=1e-6)


def test_normal_ci_covers_the_known_delta_95_percent_of_the_time():
    mu, sigma, k, runs = 0.1, 0.5, 150, 2000
    truth = _expected_gain(mu, sigma)
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(runs):
        gains = np.maximum(rng.normal(mu, sigma, size=(k, 1, 1)), 0.0)
        accumulator = GainAccumulator(1, 1)
        accumulator.add(gains[:70])
        accumulator.add(gains[70:])
        half = Z_95 * accumulator.stderr()[0, 0]
        covered += abs(accumulator.mean[0, 0] - truth) <= half
    assert 0.93 <= covered / runs <= 0.97, covered / runs


def test_bootstrap_ci_covers_the_known_delta_and_is_seeded():
    mu, sigma, k, runs = 0.1, 0.5, 150, 400
    truth = _expected_gain(mu, sigma)
    rng = np.random.default_rng(2)
    samples = np.maximum(rng.normal(mu, sigma, size=(runs, k)), 0.0)
    covered = 0
    for r in range(runs):
        low, high = bootstrap_ci(samples[r][:, None], 1000, np.random.default_rng(r))
        covered += low[0] <= truth <= high[0]
    assert 0.91 <= covered / runs <= 0.98, covered / runs
    first = bootstrap_ci(samples[0][:, None], 500, np.random.default_rng(7))
    again = bootstrap_ci(samples[0][:, None], 500, np.random.default_rng(7))
    assert np.array_equal(first[0], again[0]) and np.array_equal(first[1], again[1])


@pytest.mark.parametrize("shared_noise", [True, False])
def test_paired_comparison_separates_close_layers_only_with_pairing(shared_noise):
    """Two layers whose gains differ by a small constant on every latent: pairing detects it,
    marginal intervals overlap."""
    rng = np.random.default_rng(3)
    base = np.maximum(rng.normal(1.0, 1.0, size=300), 0.0)
    second = base + 0.02 if shared_noise else np.maximum(rng.normal(1.02, 1.0, size=300), 0.0)
    accumulator = GainAccumulator(2, 1)
    accumulator.add(np.stack([base, second], axis=1)[:, :, None])
    difference = accumulator.mean[1, 0] - accumulator.mean[0, 0]
    paired = accumulator.paired_stderr(np.array([1]), np.array([0]))[0]
    if shared_noise:
        assert difference - Z_95 * paired > 0  # distinguishable
    else:
        assert difference - Z_95 * paired <= 0  # noise too large for 0.02 at K=300
