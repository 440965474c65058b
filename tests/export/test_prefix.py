"""Generator-prefix reuse in layer-wise re-scoring gives today's scores (manipulate + score)."""

from __future__ import annotations

import numpy as np
import torch
from export_helpers import PARITY_RTOL, relative_error

from rescore.export.prefix import entry_stages, run_stages, stage_flops, synthesis_stages
from rescore.export.session import TorchSession, manipulate_and_score, score_layer_sets
from rescore.kernels.manipulate import layer_sets_all_and_each, manipulate


def _directions(count: int, num_layers: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    directions = rng.standard_normal((count, num_layers, dim))
    return (directions / np.linalg.norm(directions, axis=-1, keepdims=True)).astype(np.float32)


def test_stylegan_stages_compose_to_synthesis(stylegan_color):
    generator, _ = stylegan_color
    stages = synthesis_stages(generator)
    assert [s.layers for s in stages] == [(i,) for i in range(generator.num_layers)] + [()]
    wp = torch.randn(
        3, generator.num_layers, generator.w_dim, generator=torch.Generator().manual_seed(0)
    )
    with torch.no_grad():
        assert torch.equal(run_stages(stages, None, wp), generator.synthesize(wp))
    flops = stage_flops(stages, wp[:1])
    assert len(flops) == len(stages) and flops[-2] > flops[0] > 0


def test_each_layer_set_enters_at_its_first_moved_layer(stylegan_color):
    generator, _ = stylegan_color
    stages = synthesis_stages(generator)
    sets = layer_sets_all_and_each(generator.num_layers)
    assert entry_stages(stages, sets).tolist() == [0, *range(generator.num_layers)]
    assert entry_stages(stages, np.zeros((1, generator.num_layers), bool)).tolist() == [
        len(stages) - 1
    ]


def test_prefix_reuse_matches_manipulate_and_score(stylegan_color):
    generator, predictor = stylegan_color
    session = TorchSession(generator, [predictor], "cpu")
    z = np.random.default_rng(0).standard_normal((5, generator.z_dim)).astype(np.float32)
    wp = session.geometry.truncate(session.map(z))  # [5, L, D]
    directions = _directions(2, generator.num_layers, generator.w_dim)
    sets = layer_sets_all_and_each(generator.num_layers)
    fast = score_layer_sets(session, wp, directions, sets, 2.0, batch_size=4)
    reference = manipulate_and_score(session, wp, directions, sets, 2.0, batch_size=4)
    assert fast.shape == (2, len(sets), 5, len(session.semantic_names))
    assert relative_error(fast, reference) < PARITY_RTOL
    assert np.abs(reference[:, 1:] - reference[:, :1]).max() > 0  # the sets do differ
    # and the reference is today's path: the manipulate kernel, then the pass, 4 at a time
    codes = manipulate(wp, directions, sets, 2.0).reshape(-1, *wp.shape[1:])
    today = np.concatenate([session.score(codes[i : i + 4]) for i in range(0, len(codes), 4)])
    today = today.reshape(reference.shape)
    assert np.array_equal(reference, today)


def test_a_generator_without_stages_takes_the_reference_path(synthetic):
    generator, predictor = synthetic
    session = TorchSession(generator, [predictor], "cpu")
    assert synthesis_stages(generator) is None
    z = np.random.default_rng(0).standard_normal((3, generator.z_dim)).astype(np.float32)
    wp = session.geometry.truncate(session.map(z))
    directions = _directions(1, generator.num_layers, generator.w_dim)
    sets = layer_sets_all_and_each(generator.num_layers)
    assert np.array_equal(
        session.score_layer_sets(wp, directions, sets, 2.0, 8),
        manipulate_and_score(session, wp, directions, sets, 2.0, 8),
    )
