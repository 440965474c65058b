"""The synthetic scene model: protocol, determinism, truncation and the hierarchy it must reveal."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import pearsonr, spearmanr

from rescore.models.base import Generator, Predictor, truncate
from rescore.models.errors import ShapeMismatchError
from rescore.models.synthetic import (
    SyntheticSceneGenerator,
    build_synthetic,
    build_synthetic_predictor,
    default_layer_groups,
)
from rescore.models.synthetic_render import FACTORS, render_scene, speck_pattern


def _z(n: int, seed: int, dim: int = 32) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def _wp(generator: SyntheticSceneGenerator, n: int, seed: int) -> torch.Tensor:
    w = generator.map(_z(n, seed, generator.z_dim))
    return truncate(w, generator.average_w(), generator.truncation_coefficients())


@pytest.fixture(scope="module")
def generator() -> SyntheticSceneGenerator:
    return build_synthetic()


@pytest.fixture(scope="module")
def predictor():
    return build_synthetic_predictor()


@pytest.fixture(scope="module")
def sample(generator, predictor):
    """500 truncated codes, their true factor values and their measured scores."""
    with torch.no_grad():
        wp = _wp(generator, 500, seed=1)
        return wp, generator.factor_values(wp), predictor(generator.synthesize(wp))


def test_follows_the_protocols(generator, predictor):
    assert isinstance(generator, Generator)
    assert isinstance(predictor, Predictor)
    assert (generator.z_dim, generator.w_dim, generator.num_layers) == (32, 32, 10)
    assert generator.resolution == 64
    assert predictor.semantic_names == generator.factor_names
    assert len(generator.factor_names) == len(set(generator.factor_names)) == 9
    with torch.no_grad():
        images = generator(_z(5, seed=2))
        scores = predictor(images)
    assert images.shape == (5, 3, 64, 64) and images.dtype == torch.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert scores.shape == (5, 9) and scores.dtype == torch.float32


def test_same_seed_same_model_other_seed_other_model():
    z = _z(8, seed=3)
    with torch.no_grad():
        first, again, other = (build_synthetic(seed=s)(z) for s in (0, 0, 1))
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 0.05


def test_state_dict_round_trips(generator):
    state = generator.state_dict()
    assert {"directions", "w_avg", "mapping_weight1", "speck_pattern"} <= set(state)
    rebuilt = build_synthetic(seed=5)
    rebuilt.load_state_dict(state, strict=True)
    z = _z(6, seed=4)
    with torch.no_grad():
        assert torch.equal(rebuilt(z), generator(z))


def test_truncation_semantics(generator):
    psi = generator.truncation_coefficients()
    assert torch.equal(psi, torch.tensor([0.7] * 4 + [1.0] * 6))
    z = _z(16, seed=6)
    with torch.no_grad():
        w = generator.map(z)
        wp = truncate(w, generator.average_w(), psi)
        assert torch.equal(generator(z), generator.synthesize(wp))
        # Untruncated layers carry w itself, truncated ones sit psi of the way from w_avg.
        assert torch.allclose(wp[:, 4:], w.unsqueeze(1).expand(-1, 6, -1))
        assert torch.allclose(wp[:, 0] - generator.average_w(), 0.7 * (w - generator.average_w()))
        untruncated = build_synthetic(truncation_psi=1.0)
        assert torch.equal(untruncated.truncation_coefficients(), torch.ones(10))
        # w_avg is the mapping's mean: a fresh large batch lands close to it.
        fresh = generator.map(_z(20000, seed=7)).mean(dim=0)
    spread = generator.map(_z(2000, seed=8)).std(dim=0)
    assert ((fresh - generator.average_w()).abs() < 0.05 * spread).all()


def test_mapping_normalises_z_and_is_not_affine(generator):
    z = _z(32, seed=9)
    with torch.no_grad():
        assert torch.allclose(generator.map(3.0 * z), generator.map(z), atol=1e-5)
        w = generator.map(torch.cat([z, -z]))
    # An affine map would give the same map(z) + map(-z) for every z.
    symmetric_sums = w[:32] + w[32:]
    assert symmetric_sums.std(dim=0).mean() > 0.1 * w.std(dim=0).mean()


def test_layer_groups_partition_the_layers(generator):
    assert default_layer_groups(10) == {
        "layout": (0, 1),
        "objects": (2, 3, 4),
        "attributes": (5, 6, 7),
        "colour": (8, 9),
    }
    for num_layers in range(4, 19):
        groups = list(default_layer_groups(num_layers).values())
        assert all(groups), f"empty group for {num_layers} layers"
        assert [layer for group in groups for layer in group] == list(range(num_layers))
    assert set(generator.factor_layers) == set(generator.factor_names)
    assert generator.factor_layers["horizon"] == (0, 1)
    assert generator.factor_layers["palette_hue"] == (8, 9)
    with pytest.raises(ShapeMismatchError, match="at least 4 layers"):
        SyntheticSceneGenerator(num_layers=3)


def test_factor_values_stay_in_their_ranges(sample):
    _, truth, _ = sample
    low = torch.tensor([f.low for f in FACTORS])
    high = torch.tensor([f.high for f in FACTORS])
    assert ((truth > low) & (truth < high)).all()
    # Each factor really varies over the sample.
    assert (truth.std(dim=0) > 0.1 * (high - low)).all()


def test_each_measurement_tracks_its_factor(sample, generator):
    _, truth, scores = sample
    for i, name in enumerate(generator.factor_names):
        rank = spearmanr(truth[:, i], scores[:, i]).statistic
        linear = pearsonr(truth[:, i], scores[:, i]).statistic
        assert rank > 0.95 and linear > 0.9, f"{name}: spearman {rank:.3f}, pearson {linear:.3f}"


def test_direct_estimates_on_known_scenes(predictor):
    """Factors with an exact pixel reading come back in their own units."""
    factors = torch.tensor(
        [
            [0.50, 0.10, 0.30, 0.40, 0.8, 0.60, 0.5, 0.20, 0.70],
            [0.60, -0.08, 0.20, 0.65, 0.1, 0.95, 0.0, 0.55, 0.45],
        ]
    )
    images = render_scene(factors, speck_pattern(64, torch.Generator().manual_seed(0)), 0.6)
    scores = predictor(images)
    exact = [0, 1, 3, 5, 7, 8]  # horizon, tilt, object_x, lighting, hue, saturation
    assert torch.allclose(scores[:, exact], factors[:, exact], atol=0.01)


def test_each_measurement_ignores_the_other_factors(sample, generator, predictor):
    wp, _, scores = sample
    wp, scores = wp[:200], scores[:200]
    spread = scores.std(dim=0)
    with torch.no_grad():
        for i, name in enumerate(generator.factor_names):
            moved = wp.clone()
            layers = list(generator.factor_layers[name])
            # One unit of the factor's code: t_f += 1, every other t_g unchanged.
            moved[:, layers] += generator.factor_scale[i] * generator.directions[i]
            change = (predictor(generator.synthesize(moved)) - scores).abs().mean(dim=0) / spread
            others = torch.cat([change[:i], change[i + 1 :]])
            assert change[i] > 0.5, f"{name} barely moves: {change[i]:.3f}"
            assert change[i] > 10 * others.max(), f"{name} leaks: {change.tolist()}"


def test_each_factor_peaks_inside_its_layer_group(sample, generator, predictor):
    """HiGAN's re-scoring in miniature, with the true direction in place of a fitted boundary."""
    wp, _, scores = sample
    wp, scores = wp[:64], scores[:64]
    psi = generator.truncation_coefficients()
    with torch.no_grad():
        for i, name in enumerate(generator.factor_names):
            delta = torch.empty(generator.num_layers)
            for layer in range(generator.num_layers):
                moved = wp.clone()
                moved[:, layer] += 2.0 * psi[layer] * generator.directions[i]
                after = predictor(generator.synthesize(moved))[:, i]
                delta[layer] = (after - scores[:, i]).clamp_min(0.0).mean()
            group = generator.factor_layers[name]
            outside = [layer for layer in range(generator.num_layers) if layer not in group]
            assert int(delta.argmax()) in group, f"{name}: {delta.tolist()}"
            assert delta[outside].max() < 0.1 * delta.max(), f"{name}: {delta.tolist()}"


def test_synthesis_is_smooth_in_the_codes(generator):
    wp = _wp(generator, 4, seed=10).requires_grad_(True)
    generator.synthesize(wp).square().sum().backward()
    grad = wp.grad
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Images depend on wp only through the factor directions: no gradient leaves their span.
    basis = generator.directions  # [F, D] orthonormal rows
    residual = grad - (grad @ basis.T) @ basis
    assert residual.abs().max() < 1e-5 * grad.abs().max()
    # Small code steps give small pixel steps.
    with torch.no_grad():
        step = 1e-3 * generator.directions[2]
        base = generator.synthesize(wp)
        nudged = generator.synthesize(wp + step)
    assert (nudged - base).abs().max() < 0.01


def test_other_resolutions_keep_the_measurements(predictor):
    small = build_synthetic(resolution=32)
    with torch.no_grad():
        wp = _wp(small, 200, seed=11)
        truth, scores = small.factor_values(wp), predictor(small.synthesize(wp))
    assert scores.shape == (200, 9)
    for i in range(len(FACTORS)):
        assert spearmanr(truth[:, i], scores[:, i]).statistic > 0.95


def test_predictor_stays_finite_on_foreign_images(predictor):
    black = -torch.ones(2, 3, 64, 64)
    grey = torch.zeros(2, 3, 64, 64)
    noise = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(12)) * 2 - 1
    assert torch.isfinite(predictor(torch.cat([black, grey, noise]))).all()


def test_rejects_mis_shaped_inputs(generator, predictor):
    with pytest.raises(ShapeMismatchError, match=r"\[B, 10, 32\]"):
        generator.synthesize(torch.zeros(2, 9, 32))
    with pytest.raises(ShapeMismatchError, match=r"\[B, 32\]"):
        generator.map(torch.zeros(2, 16))
    with pytest.raises(ShapeMismatchError, match="square RGB"):
        predictor(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ShapeMismatchError, match="choose one of"):
        build_synthetic(resolution=48)
    with pytest.raises(ShapeMismatchError, match="truncation_layers"):
        build_synthetic(truncation_layers=11)
