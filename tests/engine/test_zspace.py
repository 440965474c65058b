"""Z-space boundaries: moving z, mapping again and truncating again, all layers only."""

import json

import numpy as np
import torch
from toy_models import ToyGenerator, ToyPredictor

from rescore.engine.grid import manipulation_grid
from rescore.engine.latents import Stream, latent_block
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import report_step, rescore_step, sample_step
from rescore.engine.rescore import RescoreConfig
from rescore.engine.sample import SampleConfig
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.export.backends import BackendSpec
from rescore.models.base import truncate
from rescore.models.registry import ModelRef

SPEC = ModelSpec(
    ModelRef("toy_models:build_toy_generator"), (ModelRef("toy_models:build_toy_predictor"),)
)
CPU = BackendSpec("torch", "cpu")
K, DISTANCE = 30, 2.0


def _by_hand(z: np.ndarray, normal: np.ndarray) -> np.ndarray:
    """HiGAN's Z rescoring written out: move z, map, truncate, synthesize, score; mean gain [S]."""
    generator, predictor = ToyGenerator(), ToyPredictor()

    def score(codes: np.ndarray) -> torch.Tensor:
        w = generator.map(torch.from_numpy(codes))
        wp = truncate(w, generator.average_w(), generator.truncation_coefficients())
        return predictor(generator.synthesize(wp))

    with torch.no_grad():
        gain = torch.clamp(score(z + DISTANCE * normal) - score(z), min=0.0)
    return gain.double().mean(dim=0).numpy()


def test_z_boundary_delta_equals_moving_z_by_hand(tmp_path):
    run = RunDirectory(tmp_path / "run")
    sample_step(run, SPEC, CPU, SampleConfig(60, 0, 30), progress=False)
    normal = np.random.default_rng(4).normal(size=(1, 6)).astype(np.float32)
    normal /= np.linalg.norm(normal)
    np.save(tmp_path / "red_boundary.npy", normal)

    table = rescore_step(
        run,
        CPU,
        RescoreConfig(num_latents=K, chunk_size=12, batch_size=6, distance=DISTANCE),
        boundary_paths=[f"{tmp_path / 'red_boundary.npy'}:z"],
        spec=SPEC,
        progress=False,
    )
    expected = _by_hand(latent_block(0, Stream.RESCORE, 0, K, 6), normal)
    np.testing.assert_allclose(table.delta[0, 0], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(table.delta[0, 1:]).all()  # per-layer rows: not scored

    # the same file taken as W is another direction: the Deltas differ
    w_run = RunDirectory(tmp_path / "w_run")
    sample_step(w_run, SPEC, CPU, SampleConfig(60, 0, 30), progress=False)
    as_w = rescore_step(
        w_run,
        CPU,
        RescoreConfig(num_latents=K, chunk_size=12, batch_size=6, distance=DISTANCE),
        boundary_paths=[f"{tmp_path / 'red_boundary.npy'}:w"],
        spec=SPEC,
        progress=False,
    )
    assert not np.allclose(as_w.delta[0, 0], expected, rtol=1e-3)

    # summary and CSV report the all-layers row only
    summary = report_step(run, table)
    entry = summary["boundaries"]["red"]
    assert entry["space"] == "z" and entry["peak_layer"] is None and entry["layer_delta"] == []
    assert np.isclose(entry["delta_all_layers"], expected[0], rtol=1e-5)
    assert summary["layer_ranking"]["red"]["green"]["peak_layer"] is None
    json.loads(run.summary.read_text())  # strict JSON (no NaN)
    rows = run.table.read_text().splitlines()[1:]
    assert rows and all(row.split(",")[1] == "all" for row in rows)


def test_z_boundaries_mix_with_w_boundaries_and_adaptive_k(tmp_path):
    run = RunDirectory(tmp_path / "run")
    # a bounded predictor: finite-sample intervals are never zero-width, so the target is met
    bounded = ModelSpec(SPEC.generator, (ModelRef("toy_models:build_bounded_toy_predictor"),))
    sample_step(run, bounded, CPU, SampleConfig(40, 0, 20), progress=False)
    normal = np.eye(6, dtype=np.float32)[:1]
    np.save(tmp_path / "red_boundary.npy", normal)
    np.save(tmp_path / "green_boundary.npy", np.eye(6, dtype=np.float32)[1:2])
    from rescore.engine.rescore import CiTarget, open_rescore

    table = rescore_step(
        run,
        CPU,
        RescoreConfig(
            num_latents=96, chunk_size=8, batch_size=8, target=CiTarget(10.0, ("red", "green"))
        ),
        boundary_paths=[f"{tmp_path / 'red_boundary.npy'}:z", tmp_path / "green_boundary.npy"],
        spec=bounded,
        progress=False,
    )
    # a wide target is met long before K = 96 (once enough gains are non-zero), Z included
    assert all(2 <= k < 96 for k in table.counts.tolist())
    assert open_rescore(run.rescore_store).meta["finished"]["reason"] == "target_met"
    assert np.isnan(table.delta[0, 1:]).all() and np.isfinite(table.delta[1]).all()
    summary = report_step(run, table)
    assert summary["boundaries"]["green"]["space"] == "w"
    assert summary["boundaries"]["green"]["layer_delta"]  # ranked per layer (maybe "no effect")
    assert summary["boundaries"]["red"]["space"] == "z"
    assert summary["boundaries"]["red"]["peak_layer"] is None
    assert summary["boundaries"]["red"]["layer_delta"] == []


def test_z_grid_moves_z_and_maps_again(tmp_path):
    from rescore.engine.boundary import Boundary

    normal = np.eye(6, dtype=np.float32)[:1]
    boundary = Boundary("red", normal, space="z")
    with open_model_session(SPEC, CPU) as session:
        image = manipulation_grid(
            session, boundary, np.ones(4, bool), num_latents=2, steps=3, distance=1.0
        )
        z = latent_block(0, Stream.RESCORE, 0, 2, 6)
        moved = session.geometry.truncate(session.map(z + normal))  # the last column
        expected = session.render(moved)  # [2, 8, 8, 3]
    assert image.shape == (16, 24, 3)
    assert np.array_equal(image[:8, 16:], expected[0])
    assert np.array_equal(image[8:, 16:], expected[1])
