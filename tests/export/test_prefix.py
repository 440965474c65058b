"""Generator-prefix reuse in layer-wise re-scoring gives today's scores (manipulate + score)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_helpers import PARITY_RTOL, relative_error

from rescore.export.prefix import entry_stages, score_layer_sets_on_grid, stage_flops
from rescore.export.session import (
    TorchSession,
    manipulate_and_score,
    offered_prefix_reuse,
    score_layer_sets,
)
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate
from rescore.models.lineargan import LinearSemanticPredictor


def _directions(count: int, num_layers: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    directions = rng.standard_normal((count, num_layers, dim))
    return (directions / np.linalg.norm(directions, axis=-1, keepdims=True)).astype(np.float32)


def _session_and_codes(models, count: int = 5):
    generator, predictor = models
    session = TorchSession(generator, [predictor], "cpu")
    z = np.random.default_rng(0).standard_normal((count, generator.z_dim)).astype(np.float32)
    return session, session.geometry.truncate(session.map(z))  # [n, L, D]


def test_each_layer_set_enters_at_its_first_moved_layer(stylegan_color):
    generator, _ = stylegan_color
    stages = generator.synthesis_stages()
    assert [s.layers for s in stages] == [(i,) for i in range(generator.num_layers)] + [()]
    sets = layer_sets_all_and_each(generator.num_layers)
    assert entry_stages(stages, sets).tolist() == [0, *range(generator.num_layers)]
    assert entry_stages(stages, np.zeros((1, generator.num_layers), bool)).tolist() == [
        len(stages) - 1
    ]
    flops = stage_flops(stages, torch.zeros(1, generator.num_layers, generator.w_dim))
    assert len(flops) == len(stages) and flops[-2] > flops[0] > 0


@pytest.mark.parametrize("models", ["stylegan_color", "synthetic"])
def test_prefix_reuse_matches_manipulate_and_score(models, request):
    session, wp = _session_and_codes(request.getfixturevalue(models))
    num_layers = session.geometry.num_layers
    directions = _directions(2, num_layers, session.geometry.w_dim)
    sets = layer_sets_all_and_each(num_layers)
    assert offered_prefix_reuse(session) is not None
    fast = score_layer_sets(session, wp, directions, sets, 2.0, batch_size=4)
    reference = manipulate_and_score(session, wp, directions, sets, 2.0, batch_size=4)
    assert fast.shape == (2, len(sets), 5, len(session.semantic_names))
    assert relative_error(fast, reference) < PARITY_RTOL
    assert np.abs(reference[:, 1:] - reference[:, :1]).max() > 0  # the sets do differ
    # and the reference is today's path: the manipulate kernel, then the pass, 4 at a time
    codes = manipulate(wp, directions, sets, 2.0).reshape(-1, *wp.shape[1:])
    today = np.concatenate([session.score(codes[i : i + 4]) for i in range(0, len(codes), 4)])
    assert np.array_equal(reference, today.reshape(reference.shape))


@pytest.mark.parametrize("models", ["stylegan_color", "synthetic"])
def test_on_the_grid_torch_reuse_is_bit_identical_to_the_reference(models, request):
    """Torch eager, CPU: each set from its entry stage on the same B rows gives the very bits of
    the whole pass on the moved codes (same kernels, same batch shapes), so the engine's store is
    the same with reuse on or off."""
    session, wp = _session_and_codes(request.getfixturevalue(models), count=6)
    num_layers = session.geometry.num_layers
    direction = _directions(1, num_layers, session.geometry.w_dim)[0]
    sets = layer_sets_all_and_each(num_layers)[[3, 0, 1, num_layers]]  # any subset, any order
    fast = score_layer_sets_on_grid(
        session, offered_prefix_reuse(session), wp, direction, sets, 2.0, 4
    )
    codes = manipulate(wp, direction[None], sets, 2.0)[0]  # [K, n, L, D]
    reference = np.stack(
        [np.concatenate([session.score(c[i : i + 4]) for i in (0, 4)]) for c in codes], axis=1
    )
    assert fast.shape == (6, 4, len(session.semantic_names))
    assert np.array_equal(fast, reference)


def test_predictors_reading_features_take_the_reference_path(synthetic):
    generator, _ = synthetic
    weight, bias = torch.ones(2, 8), torch.zeros(2)
    reader = LinearSemanticPredictor((2,), (8,), ("a", "b"), weight, bias, generator.resolution)
    session = TorchSession(generator, [reader], "cpu")
    assert offered_prefix_reuse(session) is None
