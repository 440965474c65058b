"""The engine end to end on tiny toy models plugged in as `toy_models:factory`."""

import numpy as np
import pytest
import torch

from rescore.engine.errors import ScoreError
from rescore.engine.fit import FitConfig, fit_boundaries
from rescore.engine.latents import Stream, latent_block
from rescore.engine.layout import RunDirectory
from rescore.engine.pipeline import fit_step, report_step, rescore_step, sample_step
from rescore.engine.rescore import RescoreConfig
from rescore.engine.sample import SampleConfig, open_samples, sample_and_score
from rescore.engine.spec import ModelSpec, open_model_session
from rescore.engine.stats import gains
from rescore.export.backends import BackendSpec
from rescore.models.errors import UnknownNameError
from rescore.models.registry import ModelRef

SPEC = ModelSpec(
    ModelRef("toy_models:build_toy_generator"), (ModelRef("toy_models:build_toy_predictor"),)
)
BOUNDED = ModelSpec(SPEC.generator, (ModelRef("toy_models:build_bounded_toy_predictor"),))
CPU = BackendSpec("torch", "cpu")


def _arrays(store):
    return {name: store.array(name)[:] for name in ("z", "w", "scores")}


def test_samples_are_independent_of_batch_size_and_chunk_order(tmp_path):
    with open_model_session(SPEC, CPU) as session:
        a = sample_and_score(
            session,
            SPEC,
            tmp_path / "a.zarr",
            SampleConfig(50, 3, 16, batch_size=7),
            progress=False,
        )
        config = SampleConfig(50, 3, 16, batch_size=32)
        b = sample_and_score(
            session, SPEC, tmp_path / "b.zarr", config, chunks=[3, 1], progress=False
        )
        assert b.pending_chunks() == [0, 2]
        b = sample_and_score(session, SPEC, tmp_path / "b.zarr", config, progress=False)
    first, second = _arrays(a), _arrays(b)
    for name in first:
        assert np.array_equal(first[name], second[name]), name
    assert np.array_equal(first["z"], latent_block(3, Stream.SAMPLE, 0, 50, 6))
    expected_w = torch.tanh(torch.from_numpy(first["z"]) @ session.generator.mapping_weight.T) * 2
    assert np.allclose(first["w"], expected_w.numpy(), atol=1e-6)


def test_fit_recovers_the_known_directions_and_refuses_bad_requests(tmp_path):
    run = RunDirectory(tmp_path / "run")
    sample_step(run, SPEC, CPU, SampleConfig(600, 0, 200), progress=False)
    results = fit_step(
        run, FitConfig(chosen_num=100, semantics=("red", "green", "blue")), progress=False
    )
    for axis, result in enumerate(results):
        normal = result.boundary.normal[0]
        assert normal[axis] > 0.9, (result.boundary.name, normal)
        assert result.accuracy > 0.95
        assert np.isclose(np.linalg.norm(normal), 1.0, atol=1e-5)
    store = open_samples(run.samples)
    with pytest.raises(ScoreError, match="one class"):
        fit_boundaries(
            store, tmp_path / "b", FitConfig(chosen_num=50, semantics=("constant",)), progress=False
        )
    with pytest.raises(ScoreError, match="half the store"):
        fit_boundaries(store, tmp_path / "b", FitConfig(chosen_num=301), progress=False)
    with pytest.raises(UnknownNameError, match="did you mean green"):
        fit_boundaries(store, tmp_path / "b", FitConfig(semantics=("gren",)), progress=False)


def test_rescore_delta_matches_stored_scores_and_finds_the_driving_layer(tmp_path):
    run = RunDirectory(tmp_path / "run")
    sample_step(run, SPEC, CPU, SampleConfig(600, 0, 200), progress=False)
    fit_step(run, FitConfig(chosen_num=100, semantics=("red", "green", "blue")), progress=False)
    table = rescore_step(
        run,
        CPU,
        RescoreConfig(num_latents=90, chunk_size=40, batch_size=20),
        spec=SPEC,
        progress=False,
    )
    summary = report_step(run, table)
    # Delta recomputed from the stored per-sample scores equals the engine's
    from rescore.engine.rescore import open_rescore

    store = open_rescore(run.rescore_store)
    gain = gains(store.array("original")[:], store.array("manipulated")[:])
    assert table.count == 90
    assert np.allclose(table.delta, gain.mean(axis=0), atol=1e-6)
    assert np.allclose(table.stderr, gain.std(axis=0, ddof=1) / np.sqrt(90), atol=1e-6)
    # the toy model paints channel c from layer c: each semantic peaks at its own layer
    for layer, name in enumerate(("red", "green", "blue")):
        assert summary["boundaries"][name]["peak_layer"] == layer
    assert run.heatmap.stat().st_size > 1000
    header = run.table.read_text().splitlines()[0]
    assert header == "boundary,layer,semantic,delta,stderr,ci_low,ci_high,k,ci_method,flags"
    assert len(run.table.read_text().splitlines()) == 1 + 3 * (1 + 4) * 4


def test_adaptive_k_stops_at_the_first_latent_where_the_sequence_meets_the_target(tmp_path):
    from rescore.engine.intervals import ConfidenceSequence
    from rescore.engine.rescore import CiTarget, open_rescore

    run = RunDirectory(tmp_path / "run")
    sample_step(run, BOUNDED, CPU, SampleConfig(600, 0, 200), progress=False)
    fit_step(run, FitConfig(chosen_num=100, semantics=("red", "blue")), progress=False)
    target = CiTarget(0.05, ("red", "blue"))
    config = RescoreConfig(num_latents=2000, chunk_size=64, batch_size=16, target=target)
    table = rescore_step(run, CPU, config, spec=BOUNDED, progress=False)
    store = open_rescore(run.rescore_store)
    assert store.meta["finished"]["reason"] == "target_met"
    active = store.array("active")[:].astype(bool)
    all_gains = gains(store.array("original")[:], store.array("manipulated")[:])
    columns = [table.semantic_names.index(n) for n in ("red", "blue")]
    stops = []
    for m in range(2):
        k = int(active[:, m].sum())
        stops.append(k)
        assert table.counts[m] == k and 2 <= k < 2000
        assert np.all(active[:k, m]) and not np.any(active[k:, m])  # a prefix of latents
        assert np.isnan(store.array("manipulated")[k : (k // 64 + 1) * 64, m]).all()
        # replay the sequence latent by latent: met at k, not at k - 1
        sequence = ConfidenceSequence(5, np.full(4, 2.0), 2000)
        prefix = sequence.extend(all_gains[:k, m])
        half = (prefix.high - prefix.low)[:, :, columns] / 2
        assert np.all(half[k - 1] <= 0.05) and not np.all(half[k - 2] <= 0.05)
        low, high = table.ci_low[m], table.ci_high[m]
        assert np.allclose(low, prefix.low[k - 1], equal_nan=True)
        assert np.allclose(high, prefix.high[k - 1], equal_nan=True)
        assert set(table.methods[m].ravel()) == {"cs_bernstein"}
        assert np.all(table.ci_low[m] >= 0) and np.all(table.ci_high[m] <= 2.0)
    assert any(k % 64 for k in stops)  # not a chunk end: the stop is exact
    summary = report_step(run, table)
    assert summary["k_per_boundary"] == {
        name: int(count) for name, count in zip(table.boundary_names, table.counts, strict=True)
    }


def test_linear_svc_agrees_with_higan_svc(tmp_path):
    run = RunDirectory(tmp_path / "run")
    sample_step(run, SPEC, CPU, SampleConfig(1200, 0, 400), progress=False)
    store = open_samples(run.samples)
    normals = {}
    for solver in ("svc", "linear_svc"):
        (result,) = fit_boundaries(
            store,
            tmp_path / solver,
            FitConfig(chosen_num=300, solver=solver, semantics=("green",)),
            progress=False,
        )
        normals[solver] = result.boundary.normal[0]
    assert float(normals["svc"] @ normals["linear_svc"]) > 0.95


def test_nan_scores_are_reported_with_their_count(tmp_path):
    spec = ModelSpec(SPEC.generator, (ModelRef("toy_models:build_nan_predictor"),))
    run = RunDirectory(tmp_path / "run")
    store = sample_step(run, spec, CPU, SampleConfig(100, 0, 50), progress=False)
    expected = int(np.isnan(store.array("scores")[:, 0]).sum())
    assert 0 < expected < 100
    with pytest.raises(ScoreError, match=f"has {expected} NaN/inf scores"):
        fit_step(run, FitConfig(chosen_num=10, semantics=("red",)), progress=False)


def test_bootstrap_intervals_are_seeded_and_bracket_delta(tmp_path):
    from rescore.engine.rescore import open_rescore
    from rescore.engine.stats import delta_statistics

    run = RunDirectory(tmp_path / "run")
    sample_step(run, SPEC, CPU, SampleConfig(400, 0, 200), progress=False)
    fit_step(run, FitConfig(chosen_num=80, semantics=("red",)), progress=False)
    config = RescoreConfig(num_latents=120, chunk_size=60, batch_size=30)
    rescore_step(run, CPU, config, spec=SPEC, progress=False)
    store = open_rescore(run.rescore_store)
    first = delta_statistics(store, ci_method="bootstrap", resamples=400, seed=3)
    again = delta_statistics(store, ci_method="bootstrap", resamples=400, seed=3)
    normal = delta_statistics(store)
    assert np.array_equal(first.ci_low, again.ci_low, equal_nan=True)
    assert np.array_equal(first.ci_high, again.ci_high, equal_nan=True)
    moved = (normal.delta > 1e-3) & np.isfinite(normal.ci_low) & np.isfinite(first.ci_low)
    assert np.all(first.ci_low[moved] <= first.delta[moved] + 1e-7)
    assert np.all(first.ci_high[moved] >= first.delta[moved] - 1e-7)
    # both intervals describe the same uncertainty: widths within a factor of 1.5
    ratio = (first.ci_high - first.ci_low)[moved] / (normal.ci_high - normal.ci_low)[moved]
    assert np.all((ratio > 0.67) & (ratio < 1.5)), ratio
